//! A hospital's key material, made on its own machine at first start and kept in its state
//! directory with mode 0600: its share s_i of the collective secret and its X25519 exchange key;
//! after setup its threshold secret and the consortium receiving key pair (what aggregates are
//! re-encrypted to, derived from every hospital's contribution); plus the public keys the
//! coordinator relayed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use he_agg::ckks::{CkksContext, PublicKey, SecretKey, wire};
use he_agg::multiparty::sealed::ExchangeKeys;
use he_agg::multiparty::{ThresholdSecret, wire as mpw};
use serde::{Deserialize, Serialize};

const RECEIVE_SK: &str = "consortium-receive.key";
const RECEIVE_PK: &str = "consortium-receive.pub";

/// Writes a file only its owner can read.
pub fn write_secret(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let tmp = path.with_extension("tmp");
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Writes a public file atomically.
pub fn write_public(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

fn read(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
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

/// The collective public key and the other hospitals' exchange keys, as the coordinator
/// relayed them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PeerKeys {
    pub collective_public_key: Vec<u8>,
    pub exchange: Vec<(u32, [u8; 32])>,
}

/// The consortium receiving key pair (every hospital holds the same; the coordinator only the
/// public half).
pub struct ReceiveKeys {
    pub sk: SecretKey,
    pub pk: PublicKey,
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
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (share_p, exch_p) = (dir.join("share.key"), dir.join("exchange.key"));
        let existing = [&share_p, &exch_p].iter().filter(|p| p.exists()).count();
        if existing != 0 && existing != 2 {
            bail!(
                "{} holds only part of this hospital's keys: refusing to make new ones over them",
                dir.display()
            );
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
            (Some(sk), Some(pk)) => Some(ReceiveKeys {
                sk: wire::decode_secret_key(ctx, &sk).context(RECEIVE_SK)?,
                pk: wire::decode_public_key(ctx, &pk).context(RECEIVE_PK)?,
                pk_bytes: pk,
            }),
            (None, None) => None,
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
        self.receive = Some(ReceiveKeys { sk, pk, pk_bytes });
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
