//! A round's switch of its sum to the consortium receiving key, as the coordinator and every
//! switcher reckon it alike: from the contributions switched (signed weight, the seed its
//! items' a's derive from), the digest each ciphertext's masks are bound to and the active
//! set, the level the shares come at, each switcher's mask seed, the seeds of the summed a's,
//! the switchers' protocol (flooding for those weights) and the combiner that finalizes the
//! result. One type, so the two ends cannot drift apart.

use crate::ckks::Ciphertext;
use crate::multiparty::{KeySwitchShare, MultipartyError, ReceiveSwitch, SwitchedResult};
use crate::ring::Seed;

use super::{HeSetup, item_seed};

/// One contribution as switched: its signed weight and the seed of its items' a's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Switched {
    weight: u64,
    a_seed: Seed,
}

/// A round's switch by `active` of the sum of `contributions`.
#[derive(Clone, Debug)]
pub struct RoundSwitch {
    /// per ciphertext of the sum: what its switchers' masks are bound to
    digests: Vec<[u8; 32]>,
    contributions: Vec<Switched>,
    active: Vec<u32>,
    level: usize,
    plan_level: usize,
}

impl RoundSwitch {
    /// `digests`: one per ciphertext of the sum; `contributions`: (signed weight, seed of its
    /// items' a's) in the order named — both as `protocol::transcript::switch_inputs`
    /// gives them.
    pub fn new(
        setup: &HeSetup,
        digests: Vec<[u8; 32]>,
        contributions: Vec<(u64, Seed)>,
        active: Vec<u32>,
    ) -> Self {
        let contributions: Vec<Switched> = contributions
            .into_iter()
            .map(|(weight, a_seed)| Switched { weight, a_seed })
            .collect();
        let weights: Vec<f64> = contributions.iter().map(|c| c.weight as f64).collect();
        Self {
            level: setup.plan.result_level(&setup.ctx, &weights, active.len()),
            plan_level: setup.plan.level,
            digests,
            contributions,
            active,
        }
    }

    /// Ciphertexts in the sum.
    pub fn count(&self) -> usize {
        self.digests.len()
    }

    /// The switchers, as named in the request.
    pub fn active(&self) -> &[u32] {
        &self.active
    }

    /// The level the switching shares come at ([`super::AggregationPlan::result_level`]).
    pub fn level(&self) -> usize {
        self.level
    }

    /// Whether the shares come a level below the plan's (the signed weights leave the room).
    pub fn rescaled(&self) -> bool {
        self.level < self.plan_level
    }

    /// The signed weights, in the contributions' order.
    pub fn weights(&self) -> Vec<f64> {
        self.contributions.iter().map(|c| c.weight as f64).collect()
    }

    /// `switcher`'s mask seed of ciphertext `k`: bound to the contributions and the set.
    pub fn mask_seed(&self, setup: &HeSetup, k: usize, switcher: u32) -> Seed {
        setup
            .crs
            .receive_switch_seed(&self.digests[k], switcher, &self.active)
    }

    /// The seeds of the a's summed in ciphertext `k`, one per contribution.
    pub fn a_seeds(&self, k: usize) -> Vec<Seed> {
        self.contributions
            .iter()
            .map(|c| item_seed(&c.a_seed, k))
            .collect()
    }

    /// The protocol a switcher makes its shares with (flooding sized for the signed weights).
    pub fn switcher(&self, setup: &HeSetup) -> Result<ReceiveSwitch, MultipartyError> {
        let flooding = setup.plan.flooding(&self.weights())?;
        Ok(ReceiveSwitch::new(&setup.ctx, flooding, self.active.len()))
    }

    /// The protocol that sums and finalizes the switchers' shares (the flooding's size plays no
    /// part in either).
    pub fn combiner(setup: &HeSetup) -> Result<ReceiveSwitch, MultipartyError> {
        Ok(ReceiveSwitch::new(
            &setup.ctx,
            setup.plan.flooding(&[1.0])?,
            1,
        ))
    }

    /// Ciphertext `k` of the sum switched, from the sum of every switcher's shares of it.
    pub fn finalize(
        &self,
        setup: &HeSetup,
        combiner: &ReceiveSwitch,
        k: usize,
        ct: &Ciphertext,
        share: KeySwitchShare,
    ) -> Result<SwitchedResult, MultipartyError> {
        let seeds = self
            .active
            .iter()
            .map(|&i| self.mask_seed(setup, k, i))
            .collect();
        combiner.finalize(ct, share, seeds)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::HeSettings;

    #[test]
    fn a_switch_names_each_ciphertexts_masks_and_summed_seeds() {
        let setup = HeSetup::new(&HeSettings::default(), 3, 2, &[5; 16]).unwrap();
        let digests = vec![[1; 32], [2; 32]];
        let contributions = vec![(10, [7; 32]), (30, [9; 32])];
        let s = RoundSwitch::new(&setup, digests.clone(), contributions, vec![3, 1]);
        assert_eq!((s.count(), s.active()), (2, &[3u32, 1][..]));
        assert_eq!(s.weights(), vec![10.0, 30.0]);
        assert_eq!(
            s.level(),
            setup.plan.result_level(&setup.ctx, &[10.0, 30.0], 2)
        );
        assert_eq!(s.rescaled(), s.level() < setup.plan.level);
        for (k, digest) in digests.iter().enumerate() {
            assert_eq!(
                s.a_seeds(k),
                vec![item_seed(&[7; 32], k), item_seed(&[9; 32], k)]
            );
            for i in [1, 3] {
                let want = setup.crs.receive_switch_seed(digest, i, &[1, 3]);
                assert_eq!(s.mask_seed(&setup, k, i), want);
            }
        }
        // every switcher's and ciphertext's mask is its own
        assert_ne!(s.mask_seed(&setup, 0, 1), s.mask_seed(&setup, 0, 3));
        assert_ne!(s.mask_seed(&setup, 0, 1), s.mask_seed(&setup, 1, 1));
        assert!(s.switcher(&setup).is_ok() && RoundSwitch::combiner(&setup).is_ok());
    }
}
