//! Messages. Each travels in an [`Envelope`] that binds it to the protocol version, the
//! federation, the round and the sender; the receiver checks all four against the connection
//! before acting. Bodies that announce a stream of items (ciphertexts, shares, vectors) are the
//! first frame of their stream; the items follow as frames of opaque bytes.

use serde::{Deserialize, Serialize};

use crate::error::ProtocolError;
use crate::identity::{FederationId, Party};
pub use crate::serve::collective::CollectiveMsg;
pub use crate::serve::head::HeadMsg;
pub use crate::serve::released::ReleasedMsg;

mod federation;
pub use federation::{FederationMsg, Phase, RoundMetrics};

pub const PROTOCOL_VERSION: u16 = 9;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub version: u16,
    pub federation: FederationId,
    pub round: u64,
    pub sender: Party,
    pub body: Body,
}

/// A message, by protocol: each family has its own vocabulary, so a server of one protocol
/// never has to consider another's messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Body {
    /// The training rounds (hospital ↔ coordinator).
    Federation(FederationMsg),
    /// Mode (b) serving (requester ↔ inference server), [`crate::serve::released`].
    Released(ReleasedMsg),
    /// Mode (a) serving (keyholders and requesters ↔ the serving coordinator),
    /// [`crate::serve::collective`].
    Collective(CollectiveMsg),
    /// Head training (contributors and keyholders ↔ the coordinator), [`crate::serve::head`].
    Head(HeadMsg),
    /// Requester → an inference server of either mode: what is served? (The answer's family
    /// says which mode.)
    InferInfoRequest,
    /// A message was refused (logged on both sides).
    Refused { reason: String },
}

impl Body {
    /// A short name for logs and audit entries.
    pub fn kind(&self) -> &'static str {
        match self {
            Body::Federation(m) => m.kind(),
            Body::Released(m) => m.kind(),
            Body::Collective(m) => m.kind(),
            Body::Head(m) => m.kind(),
            Body::InferInfoRequest => "infer-info-request",
            Body::Refused { .. } => "refused",
        }
    }
}

impl Envelope {
    pub fn new(federation: FederationId, round: u64, sender: Party, body: Body) -> Self {
        Self {
            version: PROTOCOL_VERSION,
            federation,
            round,
            sender,
            body,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("envelopes always serialize")
    }

    /// Decodes and checks version, federation and sender (against the connection's identity).
    pub fn decode(
        bytes: &[u8],
        federation: FederationId,
        peer: Party,
    ) -> Result<Self, ProtocolError> {
        let env: Envelope =
            postcard::from_bytes(bytes).map_err(|e| ProtocolError::Decode(e.to_string()))?;
        if env.version != PROTOCOL_VERSION {
            return Err(ProtocolError::Version {
                got: env.version,
                want: PROTOCOL_VERSION,
            });
        }
        if env.federation != federation {
            return Err(ProtocolError::Federation {
                got: env.federation.to_hex(),
                want: federation.to_hex(),
            });
        }
        if env.sender != peer {
            return Err(ProtocolError::Impersonation {
                claimed: env.sender,
                actual: peer,
            });
        }
        Ok(env)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FED: FederationId = FederationId([7; 16]);

    #[test]
    fn envelopes_round_trip_and_bind_their_context() {
        let env = Envelope::new(
            FED,
            3,
            Party::Hospital(2),
            Body::Federation(FederationMsg::Update {
                weight: 120,
                count: 37,
                a_seed: [5; 32],
                signature: vec![1; 70],
            }),
        );
        let bytes = env.encode();
        assert_eq!(
            Envelope::decode(&bytes, FED, Party::Hospital(2)).unwrap(),
            env
        );
        assert!(matches!(
            Envelope::decode(&bytes, FED, Party::Hospital(3)),
            Err(ProtocolError::Impersonation {
                claimed: Party::Hospital(2),
                actual: Party::Hospital(3)
            })
        ));
        assert!(matches!(
            Envelope::decode(&bytes, FederationId([8; 16]), Party::Hospital(2)),
            Err(ProtocolError::Federation { .. })
        ));
        let mut old = env.clone();
        old.version = 0;
        assert!(matches!(
            Envelope::decode(&old.encode(), FED, Party::Hospital(2)),
            Err(ProtocolError::Version { .. })
        ));
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::decode(&bytes, FED, Party::Coordinator);
        }
    }
}
