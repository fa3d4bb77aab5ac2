//! Encrypted diagnosis served by the coordinator, in the two modes of the design:
//!
//! - [`released`] — mode (b): the consortium released the final model to the server as
//!   plaintext weights; a requester's image arrives encrypted under the requester's own key and
//!   the result goes back under it. One request is one sans-IO [`released::handler`] run.
//! - [`collective`] — mode (a): the model stays with the hospitals; images are encrypted under
//!   their collective key and each signed request is evaluated and switched to its requester's
//!   key by t keyholders. The sans-IO [`collective::ServingEngine`] and its
//!   [`collective::shell`].
//!
//! The wire types of both are in `protocol::serve`; the requester's side in `client::infer`,
//! the keyholder's in the node binary, the evaluation itself in `he_agg::infer`.

pub mod collective;
pub mod released;
