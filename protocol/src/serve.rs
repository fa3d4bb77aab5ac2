//! The wire types of encrypted diagnosis, per mode: [`released`] (mode b: the server holds the
//! model's weights as plaintexts) and [`collective`] (mode a: the model stays with the
//! hospitals, images under their collective key, and t keyholders evaluate and switch each
//! signed request), and [`head`] (a head
//! trained on a site's encrypted features under such a key, refreshed by t keyholders).

pub mod collective;
pub mod head;
pub mod released;
