//! End-to-end encryption of pairwise messages (Shamir shares) so the coordinator can relay them
//! without reading them: X25519 between the two parties' exchange keys, a key derived with
//! BLAKE3 from the shared secret and both public keys, and ChaCha20-Poly1305 over the message
//! with the caller's context (federation, sender, receiver, purpose) as associated data.

use chacha20poly1305::aead::{Aead, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::ring::Prng;

use super::error::MultipartyError;

/// Nonce (12 bytes) + tag (16 bytes) added to every sealed message.
pub const SEAL_OVERHEAD: usize = 12 + 16;

/// A party's long-term key-exchange pair; the secret half is wiped on drop.
pub struct ExchangeKeys {
    secret: StaticSecret,
    public: [u8; 32],
}

impl std::fmt::Debug for ExchangeKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeKeys")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl ExchangeKeys {
    pub fn generate(prng: &mut Prng) -> Self {
        let mut bytes = Zeroizing::new([0u8; 32]);
        prng.fill_bytes(bytes.as_mut());
        Self::from_secret_bytes(*bytes)
    }

    /// Restores a pair from its stored secret (32 bytes).
    pub fn from_secret_bytes(bytes: [u8; 32]) -> Self {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret).to_bytes();
        Self { secret, public }
    }

    /// The secret, for storing on the party's own disk (mode 0600). Wiped on drop.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    fn cipher(&self, peer: &[u8; 32], sending: bool) -> Result<ChaCha20Poly1305, MultipartyError> {
        let shared = self.secret.diffie_hellman(&PublicKey::from(*peer));
        // a low-order peer key gives an all-zero secret: refuse it
        if !shared.was_contributory() {
            return Err(MultipartyError::Unseal);
        }
        // both directions get the same key; the associated data names sender and receiver
        let (first, second) = if sending {
            (&self.public, peer)
        } else {
            (peer, &self.public)
        };
        let mut material = Zeroizing::new([0u8; 96]);
        material[..32].copy_from_slice(shared.as_bytes());
        material[32..64].copy_from_slice(first);
        material[64..].copy_from_slice(second);
        let key = Zeroizing::new(blake3::derive_key(
            "HEAL sealed pairwise message v1",
            material.as_ref(),
        ));
        ChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| MultipartyError::Unseal)
    }

    /// Encrypts `message` for the holder of `receiver`; `context` is authenticated, not hidden.
    pub fn seal(
        &self,
        receiver: &[u8; 32],
        context: &[u8],
        message: &[u8],
        prng: &mut Prng,
    ) -> Result<Vec<u8>, MultipartyError> {
        let cipher = self.cipher(receiver, true)?;
        let mut nonce = [0u8; 12];
        prng.fill_bytes(&mut nonce);
        let sealed = cipher
            .encrypt(
                &nonce.into(),
                Payload {
                    msg: message,
                    aad: context,
                },
            )
            .map_err(|_| MultipartyError::Unseal)?;
        let mut out = Vec::with_capacity(12 + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    /// Decrypts a message from the holder of `sender` sealed with the same `context`.
    pub fn open(
        &self,
        sender: &[u8; 32],
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, MultipartyError> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(MultipartyError::Unseal);
        }
        let cipher = self.cipher(sender, false)?;
        let nonce: [u8; 12] = sealed[..12]
            .try_into()
            .map_err(|_| MultipartyError::Unseal)?;
        cipher
            .decrypt(
                &nonce.into(),
                Payload {
                    msg: &sealed[12..],
                    aad: context,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| MultipartyError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_messages_open_only_for_the_right_pair_and_context() {
        let mut prng = Prng::from_seed(&[5; 32]);
        let alice = ExchangeKeys::generate(&mut prng);
        let bob = ExchangeKeys::generate(&mut prng);
        let eve = ExchangeKeys::generate(&mut prng);
        let msg = b"share of party 1 for party 2";
        let sealed = alice
            .seal(&bob.public(), b"fed|1->2", msg, &mut prng)
            .unwrap();
        assert_eq!(sealed.len(), msg.len() + SEAL_OVERHEAD);
        assert_eq!(
            bob.open(&alice.public(), b"fed|1->2", &sealed)
                .unwrap()
                .as_slice(),
            msg
        );
        assert_eq!(
            bob.open(&alice.public(), b"fed|1->3", &sealed).unwrap_err(),
            MultipartyError::Unseal
        );
        assert_eq!(
            eve.open(&alice.public(), b"fed|1->2", &sealed).unwrap_err(),
            MultipartyError::Unseal
        );
        assert_eq!(
            bob.open(&eve.public(), b"fed|1->2", &sealed).unwrap_err(),
            MultipartyError::Unseal
        );
        let mut tampered = sealed.clone();
        tampered[20] ^= 1;
        assert_eq!(
            bob.open(&alice.public(), b"fed|1->2", &tampered)
                .unwrap_err(),
            MultipartyError::Unseal
        );
        assert_eq!(
            bob.open(&alice.public(), b"fed|1->2", &sealed[..10])
                .unwrap_err(),
            MultipartyError::Unseal
        );
        // a low-order public key is refused
        assert_eq!(
            alice.seal(&[0u8; 32], b"x", msg, &mut prng).unwrap_err(),
            MultipartyError::Unseal
        );
        let restored = ExchangeKeys::from_secret_bytes(*bob.secret_bytes());
        assert_eq!(restored.public(), bob.public());
    }
}
