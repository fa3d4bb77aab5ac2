//! The inference setup a keyholder serves: the setup's id and this hospital's threshold secret of
//! its key, in one file written whole or not at all. It is replaced only when a new setup is
//! formed, never when one starts: a serving coordinator restarted in the middle of
//! `--new-setup` (without it) still finds every keyholder holding the setup it saved.

use std::path::Path;

use anyhow::Context;
use he_agg::ckks::CkksContext;
use he_agg::multiparty::{ThresholdSecret, wire as mpw};
use zeroize::Zeroizing;

use super::keys::{read, write_secret};

const FILE: &str = "setup.bin";
/// Files of the two-file layout (before protocol 6), read if `setup.bin` is absent.
const LEGACY: [&str; 2] = ["threshold.key", "setup.id"];

pub struct HeldSetup {
    /// the hash of the setup's round-1 relinearization sum
    pub id: [u8; 32],
    pub secret: ThresholdSecret,
}

/// The setup held in `dir`, if any.
pub fn load(dir: &Path, ctx: &std::sync::Arc<CkksContext>) -> anyhow::Result<Option<HeldSetup>> {
    let path = dir.join(FILE);
    let bytes = match read(&path)? {
        Some(b) => Zeroizing::new(b),
        None => return load_legacy(dir, ctx),
    };
    let (id, secret) = bytes
        .split_first_chunk::<32>()
        .with_context(|| format!("{} is too short", path.display()))?;
    Ok(Some(HeldSetup {
        id: *id,
        secret: mpw::decode_threshold_secret(ctx, secret)
            .with_context(|| format!("{}", path.display()))?,
    }))
}

fn load_legacy(dir: &Path, ctx: &std::sync::Arc<CkksContext>) -> anyhow::Result<Option<HeldSetup>> {
    let (Ok(secret), Ok(id)) = (
        std::fs::read(dir.join(LEGACY[0])).map(Zeroizing::new),
        std::fs::read(dir.join(LEGACY[1])),
    ) else {
        return Ok(None);
    };
    Ok(Some(HeldSetup {
        id: id
            .try_into()
            .map_err(|_| anyhow::anyhow!("inference setup.id is not 32 bytes"))?,
        secret: mpw::decode_threshold_secret(ctx, &secret).context("inference threshold.key")?,
    }))
}

/// `held` as [`store_encoded`] writes it.
pub fn encode(ctx: &CkksContext, held: &HeldSetup) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(held.id.to_vec());
    bytes.extend_from_slice(&Zeroizing::new(mpw::encode_threshold_secret(
        ctx,
        &held.secret,
    )));
    bytes
}

/// Replaces the setup held in `dir` by `held` (one durable write; the old files go after).
#[cfg(test)]
pub fn store(dir: &Path, ctx: &CkksContext, held: &HeldSetup) -> anyhow::Result<()> {
    store_encoded(dir, &encode(ctx, held))
}

/// Replaces the setup held in `dir` by an [`encode`]d one (one durable write; the old files go
/// after).
pub fn store_encoded(dir: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    write_secret(&dir.join(FILE), bytes)?;
    for f in LEGACY {
        let _ = std::fs::remove_file(dir.join(f));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use he_agg::ckks::{Parameters, Preset};
    use he_agg::multiparty::threshold::deal;
    use he_agg::ring::Prng;

    #[test]
    fn the_held_setup_survives_a_restart_and_is_replaced_whole() {
        let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), &ctx).unwrap().is_none());
        let secret = || {
            let sk = ctx.key_generator().unwrap().secret_key();
            let shares = deal(&ctx, &sk, 1, &[1], 1, &mut Prng::from_os().unwrap()).unwrap();
            ThresholdSecret::combine(&ctx, 1, 1, &[1], &shares).unwrap()
        };
        // a keyholder of the two-file layout keeps its setup
        std::fs::write(dir.path().join("setup.id"), [3u8; 32]).unwrap();
        std::fs::write(
            dir.path().join("threshold.key"),
            mpw::encode_threshold_secret(&ctx, &secret()),
        )
        .unwrap();
        assert_eq!(load(dir.path(), &ctx).unwrap().unwrap().id, [3; 32]);
        // a new setup formed replaces it in one file
        store(
            dir.path(),
            &ctx,
            &HeldSetup {
                id: [4; 32],
                secret: secret(),
            },
        )
        .unwrap();
        assert_eq!(load(dir.path(), &ctx).unwrap().unwrap().id, [4; 32]);
        assert!(!dir.path().join("setup.id").exists());
        // a torn file is refused, not served
        std::fs::write(dir.path().join(FILE), [4u8; 20]).unwrap();
        assert!(load(dir.path(), &ctx).is_err());
    }
}
