//! HEAL's federation protocol, shared by the hospital node (`client`) and the `coordinator`,
//! which never depend on each other:
//!
//! - [`message`]: the envelopes every message travels in (version, federation, round, sender)
//!   and their bodies;
//! - [`frame`]: length-prefixed frames, sizes checked before anything is allocated;
//! - [`tls`]: TLS 1.3 with mutual authentication against the consortium CA (rustls, ring);
//! - [`link`]: QUIC endpoints (quinn) and a connection that sends and receives framed messages,
//!   each on its own stream, large payloads item by item;
//! - [`serve`]: the headers of encrypted serving, `serve::released` (mode b: the model released
//!   to the server), `serve::collective` (mode a: the model served under a collective key) and
//!   `serve::head` (a head trained on a site's encrypted features, refreshed by keyholders);
//! - [`transcript`]: statements each hospital signs with its certificate key, and their checks;
//! - [`plain`]: the item format of a plaintext (comparison) federation;
//!
//! What never touches the wire (durable files, logging, Prometheus, metrics and run-report
//! files) is in the `ops` crate. Nothing here knows what a ciphertext is: payloads are opaque bytes the receiver validates
//! with `he_agg`'s decoders.

pub mod error;
pub mod frame;
pub mod identity;
pub mod link;
pub mod message;
pub mod outbox;
pub mod pki;
pub mod plain;
pub mod serve;
pub mod site;
pub mod tls;
pub mod transcript;

pub use error::ProtocolError;
pub use identity::{FederationId, Party};
pub use link::{Incoming, Link};
pub use message::{
    Body, CollectiveMsg, Envelope, FederationMsg, HeadMsg, PROTOCOL_VERSION, ReleasedMsg,
};
pub use outbox::{Items, Outbox};
/// The QUIC implementation, for the types that cross this crate's API.
pub use quinn;
