//! A hospital's key material, made on its own machine at first start and kept in its state
//! directory with mode 0600: its share s_i of the collective secret and its X25519 exchange key;
//! after setup its threshold secret and the consortium receiving key pair (what aggregates are
//! re-encrypted to, derived from every hospital's contribution); plus the public keys the
//! coordinator relayed. Every file is framed with the hash of its contents
//! (`ops::checked_file`): a flipped bit or a cut file is refused with its path at start, never
//! decoded into a different key (files written before the frame are read as they are).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use he_agg::ckks::{CkksContext, PublicKey, SecretKey, wire};
use he_agg::multiparty::sealed::ExchangeKeys;
use he_agg::multiparty::{ThresholdSecret, wire as mpw};
use serde::{Deserialize, Serialize};

const RECEIVE_SK: &str = "consortium-receive.key";
const RECEIVE_PK: &str = "consortium-receive.pub";

/// Writes a file only its owner can read, whole or not at all, framed with its hash.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    ops::checked_file::write_private(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a public file, whole or not at all, framed with its hash.
pub fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    ops::checked_file::write_public(path, bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// A file [`write_secret`] or [`write_public`] wrote, checked against its hash (None when
/// there is none); a damaged one is refused with its path.
pub fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    Ok(ops::checked_file::read(path)?)
}

/// This hospital's exchange key in state directory `dir`.
pub fn read_exchange(dir: &Path) -> anyhow::Result<ExchangeKeys> {
    let bytes: [u8; 32] = read(&dir.join("exchange.key"))?
        .with_context(|| format!("no exchange.key in {}", dir.display()))?
        .try_into()
        .map_err(|_| anyhow::anyhow!("exchange.key is not 32 bytes"))?;
    Ok(ExchangeKeys::from_secret_bytes(bytes))
}

/// The keys the coordinator relayed at setup, once there are some (state directory `dir`).
pub fn read_peers(dir: &Path) -> anyhow::Result<Option<PeerKeys>> {
    match read(&dir.join("peers.bin"))? {
        Some(b) => Ok(Some(
            postcard::from_bytes(&b).context("peers.bin is corrupt")?,
        )),
        None => Ok(None),
    }
}

/// The setup every hospital checked: the collective public key made here from the signed key
/// shares, every hospital's exchange key and its certificate (which later signatures are
/// checked against).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerKeys {
    pub collective_public_key: Vec<u8>,
    pub exchange: Vec<(u32, [u8; 32])>,
    pub certificates: Vec<(u32, Vec<u8>)>,
}

impl PeerKeys {
    /// Hospital `h`'s certificate.
    pub fn certificate(&self, h: u32) -> Option<&[u8]> {
        self.certificates
            .iter()
            .find(|(i, _)| *i == h)
            .map(|(_, c)| c.as_slice())
    }
}

/// The consortium receiving key (every hospital holds the same secret; the coordinator only the
/// public half, which every hospital reports at setup so that all can check they hold one key).
pub struct ReceiveKeys {
    pub sk: SecretKey,
    /// the public half as sent to the coordinator
    pub pk_bytes: Vec<u8>,
}

/// The key material of this hospital.
pub struct Keys {
    dir: PathBuf,
    pub share: SecretKey,
    pub exchange: ExchangeKeys,
    pub threshold: Option<ThresholdSecret>,
    pub receive: Option<ReceiveKeys>,
    pub peers: Option<PeerKeys>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("dir", &self.dir)
            .field("threshold", &self.threshold.is_some())
            .field("receive", &self.receive.is_some())
            .finish_non_exhaustive()
    }
}

impl Keys {
    /// Loads the keys of `dir`, making them on first start.
    pub fn load_or_create(ctx: &Arc<CkksContext>, dir: &Path) -> anyhow::Result<Self> {
        ops::durable_file::create_private_dir(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (share_p, exch_p) = (dir.join("share.key"), dir.join("exchange.key"));
        let mut existing = [&share_p, &exch_p].iter().filter(|p| p.exists()).count();
        if existing == 1 {
            // a start interrupted between the two files: nothing left this machine yet (the key
            // shares message is made from them later), so both are made anew
            if dir.join("public_key_share.bin").exists() {
                bail!(
                    "{} holds only part of this hospital's keys, and its key shares were already sent: refusing to make new ones over them",
                    dir.display()
                );
            }
            tracing::warn!(
                "{} held one of the two keys of an interrupted first start: making both anew",
                dir.display()
            );
            existing = 0;
        }
        if existing == 0 {
            let mut kg = ctx.key_generator()?;
            let share = kg.secret_key();
            let mut prng = he_agg::ring::Prng::from_os()?;
            let exchange = ExchangeKeys::generate(&mut prng);
            write_secret(&share_p, &wire::encode_secret_key(ctx, &share))?;
            write_secret(&exch_p, exchange.secret_bytes().as_ref())?;
            tracing::info!(
                "made this hospital's key share and exchange key in {}",
                dir.display()
            );
        }
        let share = wire::decode_secret_key(ctx, &read(&share_p)?.context("share.key")?)
            .context("share.key")?;
        let exchange = read_exchange(dir)?;
        let threshold = match read(&dir.join("threshold.key"))? {
            Some(b) => Some(mpw::decode_threshold_secret(ctx, &b).context("threshold.key")?),
            None => None,
        };
        let receive = match (read(&dir.join(RECEIVE_SK))?, read(&dir.join(RECEIVE_PK))?) {
            (Some(sk), Some(pk)) => {
                // read back whole, so a damaged file is named here and not at the next round
                wire::decode_public_key(ctx, &pk).context(RECEIVE_PK)?;
                Some(ReceiveKeys {
                    sk: wire::decode_secret_key(ctx, &sk).context(RECEIVE_SK)?,
                    pk_bytes: pk,
                })
            }
            (None, None) => None,
            // setup was interrupted before threshold.key (written last) marked it done: the
            // receiving key is derived again when the shares are opened again
            _ if threshold.is_none() => None,
            _ => bail!(
                "{} holds half of the consortium receiving key",
                dir.display()
            ),
        };
        let peers = read_peers(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            share,
            exchange,
            threshold,
            receive,
            peers,
        })
    }

    /// Stores the outcome of setup: the threshold secret and the consortium receiving key (the
    /// threshold secret last, as it marks setup done).
    pub fn save_setup(
        &mut self,
        ctx: &CkksContext,
        t: ThresholdSecret,
        sk: SecretKey,
        pk: PublicKey,
    ) -> anyhow::Result<()> {
        let pk_bytes = wire::encode_public_key(ctx, &pk);
        write_secret(
            &self.dir.join(RECEIVE_SK),
            &wire::encode_secret_key(ctx, &sk),
        )?;
        write_public(&self.dir.join(RECEIVE_PK), &pk_bytes)?;
        write_secret(
            &self.dir.join("threshold.key"),
            &mpw::encode_threshold_secret(ctx, &t),
        )?;
        self.threshold = Some(t);
        self.receive = Some(ReceiveKeys { sk, pk_bytes });
        Ok(())
    }

    /// The key-shares message, made once and kept, so a restart during setup sends the same.
    pub fn key_shares_message(
        &self,
        make: impl FnOnce() -> anyhow::Result<Vec<u8>>,
    ) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join("public_key_share.bin");
        if let Some(b) = read(&path)? {
            return Ok(b);
        }
        let b = make()?;
        write_public(&path, &b)?;
        Ok(b)
    }

    pub fn save_peers(&mut self, peers: PeerKeys) -> anyhow::Result<()> {
        write_public(&self.dir.join("peers.bin"), &postcard::to_allocvec(&peers)?)?;
        self.peers = Some(peers);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use he_agg::ckks::{Parameters, Preset};

    #[test]
    fn a_first_start_or_a_setup_cut_short_is_resumed_not_bricked() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        drop(Keys::load_or_create(&ctx, &state).unwrap());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&state), 0o700);
            assert_eq!(mode(&state.join("share.key")), 0o600);
        }
        // killed between share.key and exchange.key, before anything was sent: made anew
        std::fs::remove_file(state.join("exchange.key")).unwrap();
        let keys = Keys::load_or_create(&ctx, &state).unwrap();
        assert!(state.join("exchange.key").exists());
        // …but once the key shares were sent, a missing key is not replaced silently
        std::fs::write(state.join("public_key_share.bin"), b"sent").unwrap();
        std::fs::remove_file(state.join("exchange.key")).unwrap();
        let err = Keys::load_or_create(&ctx, &state).unwrap_err();
        assert!(err.to_string().contains("already sent"), "{err}");
        write_secret(
            &state.join("exchange.key"),
            keys.exchange.secret_bytes().as_ref(),
        )
        .unwrap();
        // killed in save_setup after the receiving secret, before threshold.key marked setup
        // done: the node starts and redoes that step
        write_secret(&state.join(RECEIVE_SK), b"half").unwrap();
        let keys = Keys::load_or_create(&ctx, &state).unwrap();
        assert!(keys.receive.is_none() && keys.threshold.is_none());
    }

    /// A hospital's key files carry their hash: a flipped bit in its secret share (or any
    /// other key file) is refused at start with the file named, never decoded into another
    /// key; the file is left as it was. A key file written before the frame still loads.
    #[test]
    fn a_flipped_bit_in_a_key_file_is_refused_at_start_and_left_as_it_was() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let made = Keys::load_or_create(&ctx, &state).unwrap();
        for file in ["share.key", "exchange.key"] {
            let path = state.join(file);
            let good = std::fs::read(&path).unwrap();
            let mut bad = good.clone();
            let last = bad.len() - 1;
            bad[last] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            let err = format!("{:#}", Keys::load_or_create(&ctx, &state).unwrap_err());
            assert!(err.contains(&format!("{file} is damaged")), "{err}");
            assert_eq!(std::fs::read(&path).unwrap(), bad, "{file} was changed");
            std::fs::write(&path, &good).unwrap();
        }
        // written raw, as before the frame
        let raw = wire::encode_secret_key(&ctx, &made.share);
        std::fs::write(state.join("share.key"), &raw).unwrap();
        let again = Keys::load_or_create(&ctx, &state).unwrap();
        assert_eq!(
            wire::encode_secret_key(&ctx, &again.share),
            raw,
            "a legacy share loads as it was"
        );
    }
}
