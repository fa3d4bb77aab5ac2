//! A keyholder's round-1 stream at the serving coordinator, sans-IO: each item decoded and
//! checked as it arrives (public-key share, relinearization round-1 share, then the plan's
//! Galois shares), the Galois shares' digest checked against the one the keyholder signed, and
//! nothing kept until the stream is complete.

use he_agg::ckks::CkksContext;
use he_agg::infer::threshold::KeyShares;
use he_agg::multiparty::wire as mpw;
use protocol::serve::collective::{KeyholderRound1, KeyholderShares};
use protocol::transcript::ItemsDigest;

use super::error::KeysError;

fn invalid(s: impl Into<String>) -> KeysError {
    KeysError::Invalid(s.into())
}

/// A keyholder's round-1 stream being read.
pub struct Round1Stream {
    pub(super) hospital: u32,
    pub(super) header: KeyholderRound1,
    received: u64,
    public_key: Option<(he_agg::multiparty::PublicKeyShare, Vec<u8>)>,
    relin: Option<(he_agg::multiparty::RelinKeyShare1, Vec<u8>)>,
    galois: Vec<he_agg::multiparty::GaloisKeyShare>,
    galois_digest: ItemsDigest,
}

/// A complete stream: the shares to sum, and what is relayed to every keyholder (its record,
/// its public-key and relinearization shares as it sent them).
pub struct Round1 {
    pub shares: KeyShares,
    pub record: KeyholderShares,
    pub public_key: Vec<u8>,
    pub relinearization: Vec<u8>,
}

impl Round1Stream {
    pub(super) fn new(hospital: u32, header: KeyholderRound1, galois: usize) -> Self {
        Self {
            hospital,
            header,
            received: 0,
            public_key: None,
            relin: None,
            galois: Vec::with_capacity(galois),
            galois_digest: ItemsDigest::default(),
        }
    }

    /// Items still expected.
    pub fn remaining(&self) -> u64 {
        self.header.items() - self.received
    }

    pub fn plan(&self) -> [u8; 32] {
        self.header.plan
    }

    /// Decodes and checks the next item.
    pub fn push(&mut self, ctx: &CkksContext, item: &[u8]) -> Result<(), KeysError> {
        if self.remaining() == 0 {
            return Err(invalid(format!(
                "more items than the {} announced",
                self.header.items()
            )));
        }
        let index = self.received;
        let err = |what, e: he_agg::ckks::wire::WireError| KeysError::Item {
            index,
            what,
            reason: e.to_string(),
        };
        match index {
            0 => {
                self.public_key = Some((
                    mpw::decode_public_key_share(ctx, item)
                        .map_err(|e| err("public-key share", e))?,
                    item.to_vec(),
                ))
            }
            1 => {
                self.relin = Some((
                    mpw::decode_relin_share1(ctx, item)
                        .map_err(|e| err("relinearization round-1 share", e))?,
                    item.to_vec(),
                ))
            }
            _ => {
                self.galois
                    .push(mpw::decode_galois_share(ctx, item).map_err(|e| err("Galois share", e))?);
                self.galois_digest.push(item);
            }
        }
        self.received += 1;
        Ok(())
    }

    /// The complete stream; refused when cut short or when its Galois shares are not what the
    /// keyholder signed.
    pub(super) fn finish(self) -> Result<Round1, KeysError> {
        let cut = invalid(format!(
            "the stream ended after {} of the {} items announced",
            self.received,
            self.header.items()
        ));
        if self.remaining() != 0 {
            return Err(cut);
        }
        let (Some((public_key, pk_bytes)), Some((relinearization, relin_bytes))) =
            (self.public_key, self.relin)
        else {
            return Err(cut);
        };
        if self.galois_digest.finish() != self.header.galois_digest {
            return Err(invalid(
                "the Galois shares are not the ones the keyholder's record names",
            ));
        }
        Ok(Round1 {
            shares: KeyShares {
                public_key,
                relinearization,
                galois: self.galois,
            },
            record: KeyholderShares {
                hospital: self.hospital,
                model: self.header.model,
                galois_digest: self.header.galois_digest,
                signature: self.header.signature,
            },
            public_key: pk_bytes,
            relinearization: relin_bytes,
        })
    }
}
