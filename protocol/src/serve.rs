//! The wire types of encrypted diagnosis, per mode: [`released`] (mode b: the server holds the
//! model's weights as plaintexts) and [`collective`] (mode a: the model stays encrypted under
//! the hospitals' collective key and t keyholders switch each result).

pub mod collective;
pub mod released;
