//! SCAFFOLD's control variates at a hospital (`[train] scaffold`; Karimireddy et al., 2020):
//! the federation's c and this hospital's cᵢ, estimates of the mean gradient everywhere and
//! here. Local steps follow g + c − cᵢ, so a hospital whose images pull elsewhere (one class
//! only) drifts less from where the federation is going. The update sent is [Δx, Δcᵢ], twice
//! the model's length, summed encrypted like any update; every hospital applies the decrypted
//! average's second half to c, so c never leaves a hospital in the clear either.
//!
//! cᵢ is the mean gradient over this hospital's last local steps (taken from the steps
//! themselves, no extra pass: SCAFFOLD's "option II" estimate of it, (x − yᵢ)/(Kη), assumes
//! plain SGD, and hospitals here train with Adam). c is the sample-weighted mean of the
//! contributors' cᵢ: exactly Σ (nᵢ/n) cᵢ when every hospital contributes to every round;
//! a round without some hospital moves c by the contributors' changes alone.
//!
//! State (`scaffold.bin`, beside the model state, readable by this hospital only: cᵢ is a mean
//! gradient of its images): c, the round c is at, cᵢ, and the cᵢ of an update sent but not yet
//! applied. cᵢ advances only when the round it was sent in is applied with this hospital among
//! the contributors, so a round retried or left without it does not lose the change.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Variates {
    /// the round of the global model whose c this is
    round: u64,
    c: Vec<f32>,
    c_i: Vec<f32>,
    /// (round, cᵢ⁺) of the update sent in that round
    pending: Option<(u64, Vec<f32>)>,
}

/// The control variates of this hospital, kept durably.
pub(super) struct Scaffold {
    path: PathBuf,
    v: Variates,
    /// where the model trains (false for running statistics and frozen layers)
    mask: Vec<bool>,
}

impl Scaffold {
    /// Opens (or starts at zero) the variates of a model whose trained values are `mask`'s
    /// trues, at `round` (the round of the global model held).
    pub(super) fn open(dir: &Path, mask: Vec<bool>, round: u64) -> anyhow::Result<Self> {
        let path = dir.join("scaffold.bin");
        let n = mask.len();
        let v = match ops::checked_file::read(&path)? {
            Some(b) => {
                let v: Variates = postcard::from_bytes(&b)
                    .with_context(|| format!("{} is corrupt", path.display()))?;
                let pending_len = v.pending.as_ref().map_or(n, |(_, p)| p.len());
                if v.c.len() != n || v.c_i.len() != n || pending_len != n {
                    bail!(
                        "{} holds control variates of {} values for a model of {n}: was the \
                         config changed?",
                        path.display(),
                        v.c.len()
                    );
                }
                v
            }
            None => Variates {
                round,
                c: vec![0.0; n],
                c_i: vec![0.0; n],
                pending: None,
            },
        };
        Ok(Self { path, v, mask })
    }

    /// The values the model has; an update is twice as long.
    pub(super) fn len(&self) -> usize {
        self.mask.len()
    }

    /// The correction c − cᵢ every local step's gradient takes.
    pub(super) fn correction(&self) -> Vec<f32> {
        self.v
            .c
            .iter()
            .zip(&self.v.c_i)
            .map(|(c, ci)| c - ci)
            .collect()
    }

    /// This round's change Δcᵢ = cᵢ⁺ − cᵢ, with cᵢ⁺ the local steps' `mean_gradient`
    /// (0 where nothing trains), each value within ±`clip` (the bound every update keeps to, so
    /// that what c takes in is what cᵢ moves by); cᵢ⁺ is stored as pending before the update
    /// leaves.
    pub(super) fn contribution(
        &mut self,
        round: u64,
        mean_gradient: &[f32],
        clip: f32,
    ) -> anyhow::Result<Vec<f32>> {
        if mean_gradient.len() != self.len() {
            bail!(
                "local training reported {} mean gradients for a model of {}",
                mean_gradient.len(),
                self.len()
            );
        }
        let change: Vec<f32> = (mean_gradient.iter().zip(&self.mask).zip(&self.v.c_i))
            .map(|((&g, &m), &c)| match m && g.is_finite() {
                true => (g - c).clamp(-clip, clip),
                false => 0.0,
            })
            .collect();
        let next = self.v.c_i.iter().zip(&change).map(|(c, d)| c + d).collect();
        self.v.pending = Some((round, next));
        self.save()?;
        Ok(change)
    }

    /// `round`'s result applied: c moves by the contributors' average change `average`
    /// (clipped like any average); cᵢ takes its pending value if this hospital contributed.
    /// A result already applied (a restart between this and the model's save) changes nothing.
    pub(super) fn apply(
        &mut self,
        round: u64,
        average: &[f32],
        contributed: bool,
    ) -> anyhow::Result<()> {
        if round <= self.v.round {
            return Ok(());
        }
        if average.len() != self.len() {
            bail!(
                "a result of {} control values for a model of {}",
                average.len(),
                self.len()
            );
        }
        for ((c, &a), &m) in self.v.c.iter_mut().zip(average).zip(&self.mask) {
            if m {
                *c += a;
            }
        }
        match self.v.pending.take() {
            Some((r, next)) if r == round && contributed => self.v.c_i = next,
            // sent in an earlier round that never applied it: stale
            Some((r, _)) if r < round => {}
            other => self.v.pending = other,
        }
        self.v.round = round;
        self.save()
    }

    fn save(&self) -> anyhow::Result<()> {
        ops::checked_file::write_private(&self.path, &postcard::to_allocvec(&self.v)?)
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("heal-scaffold-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn the_local_variate_advances_only_when_its_round_is_applied_with_this_hospital_in_it() {
        let d = dir("advance");
        let mask = vec![true, true, false];
        let mut s = Scaffold::open(&d, mask.clone(), 0).unwrap();
        assert_eq!(s.correction(), vec![0.0; 3]);
        // round 1: sent, then applied with this hospital among the contributors
        let change = s.contribution(1, &[1.0, -2.0, 5.0], 64.0).unwrap();
        assert_eq!(
            change,
            vec![1.0, -2.0, 0.0],
            "nothing where the model does not train"
        );
        s.apply(1, &[0.5, 0.5, 9.0], true).unwrap();
        // c = (0.5, 0.5, 0), cᵢ = (1, −2, 0)
        assert_eq!(s.correction(), vec![-0.5, 2.5, 0.0]);
        // restarted: the same state from the file, and round 1 applied again changes nothing
        let mut s = Scaffold::open(&d, mask.clone(), 7).unwrap();
        s.apply(1, &[10.0, 10.0, 10.0], true).unwrap();
        assert_eq!(s.correction(), vec![-0.5, 2.5, 0.0]);
        // round 2: sent, but the sum was made without this hospital: c moves, cᵢ stays
        let change = s.contribution(2, &[3.0, 3.0, 3.0], 64.0).unwrap();
        assert_eq!(change, vec![2.0, 5.0, 0.0]);
        s.apply(2, &[1.0, 1.0, 1.0], false).unwrap();
        assert_eq!(s.correction(), vec![0.5, 3.5, 0.0]);
        // round 3 retried after round 2's pending: the change is against the cᵢ still held
        assert_eq!(
            s.contribution(3, &[1.0, -2.0, 0.0], 64.0).unwrap(),
            vec![0.0; 3]
        );
        // a change beyond the clip: what is sent and what cᵢ will move by are the same
        assert_eq!(
            s.contribution(4, &[101.0, -2.0, 0.0], 4.0).unwrap(),
            vec![4.0, 0.0, 0.0]
        );
        s.apply(4, &[0.0; 3], true).unwrap();
        assert_eq!(s.correction(), vec![1.5 - 5.0, 3.5, 0.0]);
        // a model of another length is refused
        assert!(Scaffold::open(&d, vec![true; 4], 0).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }
}
