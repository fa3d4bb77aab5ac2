//! Signed transcripts: every piece of key material a hospital contributes, and every update it
//! uploads, is signed with the private key of its consortium certificate (ECDSA P-256, the key
//! its mutual TLS uses). The coordinator relays the statements with the certificates; every
//! hospital checks that each certificate chains to the consortium CA, names the hospital it
//! speaks for, and signed exactly these bytes. A coordinator host that is compromised can
//! therefore withhold or reorder material but not substitute its own: it holds no hospital key.
//!
//! A statement is signed as `CONTEXT || postcard(statement)`, so a signature over one kind of
//! statement (or one federation, round or hospital) never verifies as another.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use serde::{Deserialize, Serialize};

use crate::identity::{FederationId, hospital_dns_name};
use crate::tls::TlsFiles;

/// Domain separation of every signed statement.
pub const CONTEXT: &[u8] = b"HEAL signed transcript v1\0";

/// An ECDSA P-256 signature in ASN.1 DER is at most 72 bytes; anything longer is refused unread.
pub const MAX_SIGNATURE: usize = 80;

/// A certificate of the consortium is a few hundred bytes; 8 KiB leaves room for long names.
pub const MAX_CERTIFICATE: usize = 8 << 10;

/// The BLAKE3 digest statements carry of their (large) payloads.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// The digest of a list of items (an update's ciphertexts, a stream of shares): each item's
/// length and bytes, in order, so no two lists share a digest.
pub fn digest_items<'a>(items: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut h = ItemsDigest::default();
    for item in items {
        h.push(item);
    }
    h.finish()
}

/// [`digest_items`] item by item, as a stream arrives.
#[derive(Default)]
pub struct ItemsDigest(blake3::Hasher);

impl ItemsDigest {
    pub fn push(&mut self, item: &[u8]) {
        self.0.update(&(item.len() as u64).to_le_bytes());
        self.0.update(item);
    }

    pub fn finish(&self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

/// What a hospital vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Statement {
    /// Setup: its share of the collective public key and its key-exchange key.
    KeyShares {
        federation: FederationId,
        hospital: u32,
        public_key_share: [u8; 32],
        exchange_key: [u8; 32],
    },
    /// Setup: the sealed package (Shamir share and receiving-key contribution) it dealt to `to`.
    Dealt {
        federation: FederationId,
        from: u32,
        to: u32,
        sealed: [u8; 32],
    },
    /// Setup: the public half of the consortium receiving key it derived.
    ReceiveKey {
        federation: FederationId,
        hospital: u32,
        receive_key: [u8; 32],
    },
    /// Mode (a) setup: its round-1 shares of the collective keys of the plan `plan` (the public
    /// key the images are encrypted under, the relinearization key's first round and the Galois
    /// keys, each by digest), and the digest of the final model it serves with them (every
    /// keyholder evaluates requests itself, so all must hold the same). Every keyholder checks
    /// every other's before it makes a round-2 share on their sum.
    InferenceKeyShare {
        federation: FederationId,
        hospital: u32,
        plan: [u8; 32],
        model: [u8; 32],
        public_key_share: [u8; 32],
        relinearization: [u8; 32],
        galois: [u8; 32],
    },
    /// Mode (a): a requester's request, as every switching keyholder evaluates it: `images` of
    /// the plan `plan`, their ciphertexts (digest, in order), and the key the results are
    /// switched to (digest).
    InferenceRequest {
        federation: FederationId,
        requester: u32,
        request_id: u64,
        plan: [u8; 32],
        images: u32,
        requester_key: [u8; 32],
        ciphertexts: [u8; 32],
    },
    /// A round's update: its items (digest), count and weight, and the seed every item's a
    /// derives from (the items are encrypted under the hospital's own secret, c0 = −a·s + m + e):
    /// a switcher makes the c1 it switches from it, so it switches only what hospitals signed.
    Update {
        federation: FederationId,
        round: u64,
        hospital: u32,
        weight: u64,
        count: u32,
        items: [u8; 32],
        a_seed: [u8; 32],
    },
    /// Mode (a): a switching keyholder's shares of refresh `index` of request `request_id` of
    /// `requester` (attempt `attempt` of the serving host's number `request`), by digest of its
    /// items: the other keyholders combine only what each keyholder signed.
    RefreshShares {
        federation: FederationId,
        hospital: u32,
        requester: u32,
        request_id: u64,
        request: u64,
        attempt: u32,
        index: u32,
        shares: [u8; 32],
    },
    /// Head training: a contribution of `contributor`, as every keyholder trains on it: the
    /// head plan, the examples per chunk, the training (epochs, chunks per batch, and the bits
    /// of the learning rate and momentum), the key the trained head is switched to (digest) and
    /// the chunks' ciphertexts (digest, in order).
    HeadContribution {
        federation: FederationId,
        contributor: u32,
        request_id: u64,
        plan: [u8; 32],
        counts: Vec<u32>,
        training: (u32, u32, u64, u64),
        contributor_key: [u8; 32],
        ciphertexts: [u8; 32],
    },
    /// Head training: a keyholder's refresh shares (digest) of the state after step `step` of
    /// the run on contribution `request_id` (attempt `attempt`), the state by digest: the
    /// other keyholders combine only what each keyholder signed, of the state they reached.
    HeadRefreshShares {
        federation: FederationId,
        hospital: u32,
        contributor: u32,
        request_id: u64,
        step: u64,
        attempt: u32,
        state: [u8; 32],
        shares: [u8; 32],
    },
}

impl Statement {
    /// The bytes signed.
    pub fn message(&self) -> Vec<u8> {
        let mut m = CONTEXT.to_vec();
        m.extend(postcard::to_allocvec(self).expect("statements always serialize"));
        m
    }

    /// A short name for errors.
    pub fn kind(&self) -> &'static str {
        match self {
            Statement::KeyShares { .. } => "key shares",
            Statement::Dealt { .. } => "dealt share",
            Statement::ReceiveKey { .. } => "receiving key",
            Statement::InferenceKeyShare { .. } => "inference key shares",
            Statement::InferenceRequest { .. } => "inference request",
            Statement::RefreshShares { .. } => "refresh shares",
            Statement::HeadContribution { .. } => "head contribution",
            Statement::HeadRefreshShares { .. } => "head refresh shares",
            Statement::Update { .. } => "update",
        }
    }
}

/// One hospital's setup keys as every hospital receives them: the material, its certificate and
/// its signature over [`Statement::KeyShares`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartyKeys {
    pub hospital: u32,
    pub public_key_share: Vec<u8>,
    pub exchange_key: [u8; 32],
    pub certificate: Vec<u8>,
    pub signature: Vec<u8>,
}

impl PartyKeys {
    pub fn statement(&self, federation: FederationId) -> Statement {
        Statement::KeyShares {
            federation,
            hospital: self.hospital,
            public_key_share: digest(&self.public_key_share),
            exchange_key: self.exchange_key,
        }
    }
}

/// One hospital's update as a switcher is shown it: what the hospital signed of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    pub hospital: u32,
    pub weight: u64,
    pub count: u32,
    pub items: [u8; 32],
    pub a_seed: [u8; 32],
    pub signature: Vec<u8>,
}

impl Contribution {
    /// The one constructor of an update's header: what `hospital` states of its update of
    /// `count` items whose digest is `items` ([`digest_items`]), weighing `weight`, whose a's
    /// derive from `a_seed`. Unsigned until [`Contribution::signed`]; what is signed is
    /// [`Contribution::statement`].
    pub fn new(hospital: u32, weight: u64, count: u32, items: [u8; 32], a_seed: [u8; 32]) -> Self {
        Self {
            hospital,
            weight,
            count,
            items,
            a_seed,
            signature: Vec::new(),
        }
    }

    /// [`Contribution::new`] of the update's items themselves.
    pub fn of_items(hospital: u32, weight: u64, items: &[Vec<u8>], a_seed: [u8; 32]) -> Self {
        let digest = digest_items(items.iter().map(Vec::as_slice));
        Self::new(hospital, weight, items.len() as u32, digest, a_seed)
    }

    /// The header with its hospital's signature of [`Contribution::statement`].
    pub fn signed(self, signature: Vec<u8>) -> Self {
        Self { signature, ..self }
    }

    pub fn statement(&self, federation: FederationId, round: u64) -> Statement {
        Statement::Update {
            federation,
            round,
            hospital: self.hospital,
            weight: self.weight,
            count: self.count,
            items: self.items,
            a_seed: self.a_seed,
        }
    }
}

/// Per ciphertext of a round's sum, the digest its switchers' masks are bound to; per
/// contribution, (signed weight, seed of its items' a's).
pub type SwitchInputs = (Vec<[u8; 32]>, Vec<(u64, [u8; 32])>);

/// What a round's switch is made from, as the coordinator and every switcher reckon it
/// (`he_agg::aggregate::RoundSwitch::new`): the digest each of the sum's `count` ciphertexts'
/// masks are bound to ([`switch_digest`]) and each contribution's (signed weight, seed of its
/// items' a's), in the order named.
pub fn switch_inputs(round: u64, contributions: &[Contribution], count: usize) -> SwitchInputs {
    let digests = (0..count)
        .map(|k| switch_digest(round, contributions, k))
        .collect();
    let switched = contributions.iter().map(|c| (c.weight, c.a_seed)).collect();
    (digests, switched)
}

/// What the switchers' masks for ciphertext `index` of round `round`'s sum are bound to: every
/// contribution it sums (hospital, weight, the digest of its items and its seed), in the order
/// named. The coordinator and each switcher reckon it alike.
pub fn switch_digest(round: u64, contributions: &[Contribution], index: usize) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key("HEAL round switch input v2");
    h.update(&round.to_le_bytes());
    h.update(&(index as u64).to_le_bytes());
    h.update(&(contributions.len() as u64).to_le_bytes());
    for c in contributions {
        h.update(&c.hospital.to_le_bytes());
        h.update(&c.weight.to_le_bytes());
        h.update(&c.items);
        h.update(&c.a_seed);
    }
    *h.finalize().as_bytes()
}

/// A sealed setup package with its dealer's signature over [`Statement::Dealt`]; `peer` is the
/// receiver when dealt, the dealer when relayed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedShare {
    pub peer: u32,
    pub sealed: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Why a statement is not taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TranscriptError {
    #[error(
        "the certificate presented for hospital {hospital} is not one the consortium CA issued to it: {reason}"
    )]
    Certificate { hospital: u32, reason: String },
    #[error("hospital {hospital}'s signature over its {what} does not verify")]
    Signature { hospital: u32, what: &'static str },
    #[error("a signature of {len} bytes (at most {MAX_SIGNATURE})")]
    SignatureSize { len: usize },
    #[error("this party's signing key: {0}")]
    Key(String),
}

/// Signs statements with this party's certificate key.
pub struct Signer {
    key: ring::signature::EcdsaKeyPair,
    certificate: Vec<u8>,
    rng: ring::rand::SystemRandom,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer")
    }
}

impl Signer {
    /// The signing key of a kit: `key.pem` (PKCS#8), checked against `cert.pem`.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TranscriptError> {
        let key_err = |e: &dyn std::fmt::Display| TranscriptError::Key(e.to_string());
        let certificate = files.own_cert_der().map_err(|e| key_err(&e))?;
        let key = match PrivateKeyDer::from_pem_file(&files.key).map_err(|e| key_err(&e))? {
            PrivateKeyDer::Pkcs8(k) => k,
            _ => {
                return Err(TranscriptError::Key(format!(
                    "{} is not a PKCS#8 key",
                    files.key.display()
                )));
            }
        };
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            key.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| key_err(&e))?;
        let signer = Self {
            key,
            certificate,
            rng,
        };
        // a key that is not the certificate's would sign statements nobody accepts
        let probe = b"HEAL key probe";
        let cert = CertificateDer::from(signer.certificate.as_slice());
        webpki::EndEntityCert::try_from(&cert)
            .and_then(|c| {
                c.verify_signature(
                    webpki::ring::ECDSA_P256_SHA256,
                    probe,
                    &signer.sign_raw(probe),
                )
            })
            .map_err(|_| {
                TranscriptError::Key(format!(
                    "{} does not belong to the certificate {}",
                    files.key.display(),
                    files.cert.display()
                ))
            })?;
        Ok(signer)
    }

    /// This party's certificate (DER), relayed with its statements.
    pub fn certificate(&self) -> &[u8] {
        &self.certificate
    }

    pub fn sign(&self, statement: &Statement) -> Vec<u8> {
        self.sign_raw(&statement.message())
    }

    fn sign_raw(&self, message: &[u8]) -> Vec<u8> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            // ring fails only when the system's random source does: nothing to sign with then
            .expect("the system random source works")
    }
}

/// Checks statements against the consortium CA.
#[derive(Clone, Debug)]
pub struct Verifier {
    ca: CertificateDer<'static>,
}

impl Verifier {
    /// From a kit's `ca.pem`.
    pub fn from_files(files: &TlsFiles) -> Result<Self, TranscriptError> {
        let ca = CertificateDer::from_pem_file(&files.ca)
            .map_err(|e| TranscriptError::Key(format!("{}: {e}", files.ca.display())))?;
        Ok(Self { ca })
    }

    /// Checks that `certificate` is the CA's for hospital `hospital`.
    pub fn check_certificate(
        &self,
        certificate: &[u8],
        hospital: u32,
    ) -> Result<(), TranscriptError> {
        let bad = |reason: String| TranscriptError::Certificate { hospital, reason };
        if certificate.len() > MAX_CERTIFICATE {
            return Err(bad(format!("{} bytes", certificate.len())));
        }
        let anchor = webpki::anchor_from_trusted_cert(&self.ca).map_err(|e| bad(e.to_string()))?;
        let der = CertificateDer::from(certificate);
        let cert = webpki::EndEntityCert::try_from(&der).map_err(|e| bad(e.to_string()))?;
        cert.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            &[anchor],
            &[],
            UnixTime::now(),
            webpki::KeyUsage::client_auth(),
            None,
            None,
        )
        .map_err(|e| bad(e.to_string()))?;
        let name =
            ServerName::try_from(hospital_dns_name(hospital)).map_err(|e| bad(e.to_string()))?;
        cert.verify_is_valid_for_subject_name(&name).map_err(|e| {
            bad(format!(
                "not issued to {}: {e}",
                hospital_dns_name(hospital)
            ))
        })
    }

    /// Checks that hospital `hospital`, holding `certificate`, signed `statement`.
    pub fn verify(
        &self,
        certificate: &[u8],
        hospital: u32,
        statement: &Statement,
        signature: &[u8],
    ) -> Result<(), TranscriptError> {
        if signature.len() > MAX_SIGNATURE {
            return Err(TranscriptError::SignatureSize {
                len: signature.len(),
            });
        }
        self.check_certificate(certificate, hospital)?;
        let der = CertificateDer::from(certificate);
        let cert =
            webpki::EndEntityCert::try_from(&der).map_err(|e| TranscriptError::Certificate {
                hospital,
                reason: e.to_string(),
            })?;
        cert.verify_signature(
            webpki::ring::ECDSA_P256_SHA256,
            &statement.message(),
            signature,
        )
        .map_err(|_| TranscriptError::Signature {
            hospital,
            what: statement.kind(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::COORDINATOR_SERVER_NAME;
    use crate::pki::{Ca, Issued};

    const FED: FederationId = FederationId([3; 16]);

    fn kit(dir: &std::path::Path, ca: &Ca, issued: &Issued) -> TlsFiles {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
        TlsFiles::in_dir(dir)
    }

    fn update(hospital: u32, weight: u64) -> Statement {
        Statement::Update {
            federation: FED,
            round: 4,
            hospital,
            weight,
            count: 37,
            items: digest_items([b"a".as_slice(), b"bc"]),
            a_seed: [1; 32],
        }
    }

    #[test]
    fn a_statement_verifies_only_for_its_hospital_its_bytes_and_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("consortium").unwrap();
        let h2 = kit(
            &dir.path().join("h2"),
            &ca,
            &ca.issue(&hospital_dns_name(2)).unwrap(),
        );
        let signer = Signer::from_files(&h2).unwrap();
        let verifier = Verifier::from_files(&h2).unwrap();
        let sig = signer.sign(&update(2, 100));
        let cert = signer.certificate();
        verifier.verify(cert, 2, &update(2, 100), &sig).unwrap();
        // another weight, another kind of statement: the signature does not carry over
        assert_eq!(
            verifier.verify(cert, 2, &update(2, 101), &sig),
            Err(TranscriptError::Signature {
                hospital: 2,
                what: "update"
            })
        );
        // hospital 2's certificate cannot speak for hospital 3
        assert!(matches!(
            verifier.verify(cert, 3, &update(3, 100), &sig),
            Err(TranscriptError::Certificate { hospital: 3, .. })
        ));
        // the coordinator's certificate (same CA) cannot speak for any hospital
        let coord = kit(
            &dir.path().join("c"),
            &ca,
            &ca.issue(COORDINATOR_SERVER_NAME).unwrap(),
        );
        let forger = Signer::from_files(&coord).unwrap();
        assert!(matches!(
            verifier.verify(
                forger.certificate(),
                2,
                &update(2, 100),
                &forger.sign(&update(2, 100))
            ),
            Err(TranscriptError::Certificate { hospital: 2, .. })
        ));
        // a certificate for hospital 2 from another CA neither
        let other = Ca::new("elsewhere").unwrap();
        let stranger = kit(
            &dir.path().join("x"),
            &other,
            &other.issue(&hospital_dns_name(2)).unwrap(),
        );
        let stranger = Signer::from_files(&stranger).unwrap();
        assert!(matches!(
            verifier.verify(
                stranger.certificate(),
                2,
                &update(2, 100),
                &stranger.sign(&update(2, 100))
            ),
            Err(TranscriptError::Certificate { hospital: 2, .. })
        ));
        assert_eq!(
            verifier.verify(cert, 2, &update(2, 100), &[0; 200]),
            Err(TranscriptError::SignatureSize { len: 200 })
        );
    }

    #[test]
    fn a_kit_whose_key_is_not_its_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::new("consortium").unwrap();
        let a = ca.issue(&hospital_dns_name(1)).unwrap();
        let b = ca.issue(&hospital_dns_name(2)).unwrap();
        let mixed = Issued {
            cert_pem: a.cert_pem.clone(),
            key_pem: b.key_pem.clone(),
            fingerprint: a.fingerprint.clone(),
        };
        let err = Signer::from_files(&kit(dir.path(), &ca, &mixed)).unwrap_err();
        assert!(err.to_string().contains("does not belong"), "{err}");
    }

    #[test]
    fn item_digests_separate_their_items() {
        assert_ne!(
            digest_items([b"ab".as_slice(), b"c"]),
            digest_items([b"a".as_slice(), b"bc"])
        );
        assert_ne!(
            Statement::Dealt {
                federation: FED,
                from: 1,
                to: 2,
                sealed: [0; 32]
            }
            .message(),
            Statement::Dealt {
                federation: FED,
                from: 2,
                to: 1,
                sealed: [0; 32]
            }
            .message()
        );
    }
}
