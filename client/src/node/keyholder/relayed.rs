//! Refresh shares the server relays from every active keyholder (a deep plan's segment outputs
//! in mode (a), a head's state after a step): each keyholder's set checked against the
//! signature its keyholder made with the site key of training setup, then summed per
//! ciphertext. One owner for both, so neither combines a share its keyholder did not sign.

use anyhow::Context;
use he_agg::ckks::CkksContext;
use he_agg::multiparty::{Refresh, RefreshShare, wire as mpw};
use protocol::transcript::{Statement, Verifier};

use crate::node::keys::PeerKeys;
use crate::node::trust::Distrust;

/// Checks that `from[k]`'s `count` shares (`items[k·count..]`) are what it signed
/// (`statement(hospital, its shares)`); a refusal reads "refresh shares{`what`} relayed as
/// hospital h's that it did not sign{`whose`}".
pub(super) fn check_signed(
    (peers, verifier): (&PeerKeys, &Verifier),
    from: &[(u32, Vec<u8>)],
    items: &[Vec<u8>],
    count: usize,
    statement: impl Fn(u32, &[Vec<u8>]) -> Statement,
    (what, whose): (&str, &str),
) -> anyhow::Result<()> {
    for ((h, signature), shares) in from.iter().zip(items.chunks(count)) {
        let certificate = peers
            .certificate(*h)
            .ok_or_else(|| Distrust(format!("no certificate of hospital {h}")))?;
        verifier
            .verify(certificate, *h, &statement(*h, shares), signature)
            .map_err(|e| {
                Distrust(format!(
                    "refresh shares{what} relayed as hospital {h}'s that it did not sign{whose}: \
                     {e}"
                ))
            })?;
    }
    Ok(())
}

/// The sum of every keyholder's share of each of `count` ciphertexts (`unit` names one in an
/// error).
pub(super) fn sum_shares(
    ctx: &CkksContext,
    refresh: &Refresh,
    from: &[(u32, Vec<u8>)],
    items: &[Vec<u8>],
    count: usize,
    unit: &str,
) -> anyhow::Result<Vec<RefreshShare>> {
    (0..count)
        .map(|i| {
            let mut sum: Option<RefreshShare> = None;
            for (k, (h, _)) in from.iter().enumerate() {
                let share = mpw::decode_refresh_share(ctx, &items[k * count + i])
                    .with_context(|| format!("hospital {h}'s share of {unit} {i}"))?;
                match sum.as_mut() {
                    None => sum = Some(share),
                    Some(acc) => refresh.aggregate(acc, &share)?,
                }
            }
            sum.context("no shares")
        })
        .collect()
}
