//! The job lists of every operation at every level, computed once per parameter set from the
//! same constants the CPU path uses ([`RlweContext`]'s extenders and rescale constants), so a
//! device runs exactly the CPU's arithmetic.
//!
//! Buffer layouts (limb-major, N words per limb): a ciphertext is `[part][limb]` (2 × level);
//! a decomposition is `[digit][Q_l ∪ P]`; the inner product is `[component][Q_l ∪ P]`; a
//! switching key is `[digit][b, a][Q_L ∪ P]`.

use std::ops::Range;

use super::exec::{ExtendJob, LimbJob, MapJob};
use crate::ring::{BasisExtender, ShoupConst};
use crate::rlwe::RlweContext;

fn limb(limb: usize, modulus: usize) -> LimbJob {
    LimbJob {
        limb: limb as u32,
        modulus: modulus as u32,
    }
}

fn map(dst: usize, src: usize, modulus: usize, konst: usize) -> MapJob {
    MapJob {
        dst: dst as u32,
        src: src as u32,
        modulus: modulus as u32,
        konst: konst as u32,
    }
}

/// Extension jobs from `source` limbs (starting at `first` in the source buffer) to each
/// `(dst limb, ring modulus)` target, appending the rows they read to `rows`.
fn extend_jobs(
    ext: &BasisExtender,
    first: usize,
    targets: impl Iterator<Item = (usize, usize)>,
    rows: &mut Vec<u64>,
) -> Vec<ExtendJob> {
    targets
        .map(|(dst, idx)| {
            let row = rows.len();
            rows.extend_from_slice(ext.extend_row(idx));
            ExtendJob {
                dst: dst as u32,
                modulus: idx as u32,
                first: first as u32,
                count: ext.source().len() as u32,
                row: row as u32,
            }
        })
        .collect()
}

/// Fast basis extension of limbs held in the NTT domain: an unnormalised inverse NTT of the
/// source limbs, y_i = x_i·[(B/b_i)^{-1}·N^{-1}], the extension to the new limbs, and their
/// forward NTT. Decomposition and ModDown both are one of these.
#[derive(Debug, Clone)]
pub struct ExtendPlan {
    pub intt: Vec<LimbJob>,
    pub prepare: Vec<MapJob>,
    pub prepare_consts: Vec<ShoupConst>,
    /// Limbs of the buffer that holds y.
    pub y_limbs: usize,
    pub extend: Vec<ExtendJob>,
    pub rows: Vec<u64>,
    pub ntt: Vec<LimbJob>,
}

/// Decomposing c_1 at one level into raised digits.
#[derive(Debug, Clone)]
pub struct DecomposePlan {
    pub digits: usize,
    /// Every digit (of a copy of c_1) extended to the moduli outside it.
    pub raise: ExtendPlan,
    /// A digit's own limbs are c_1's, copied as they are (NTT domain).
    pub own: Vec<MapJob>,
}

/// Dividing the inner product `[2][Q_l ∪ P]` by P onto `[2][Q_l]`.
#[derive(Debug, Clone)]
pub struct ModDownPlan {
    /// The P limbs of both components extended to Q_l.
    pub from_p: ExtendPlan,
    /// out ← (x − e)·P^{-1}
    pub combine: Vec<MapJob>,
    pub combine_consts: Vec<ShoupConst>,
}

/// Rescaling a ciphertext `[parts][level]` onto `[parts][level − 1]`: every list is ordered by
/// part (3 parts), so a degree-1 ciphertext takes the first two thirds of each.
#[derive(Debug, Clone)]
pub struct RescalePlan {
    pub intt_last: Vec<LimbJob>,
    pub add_half: Vec<MapJob>,
    pub half: Vec<ShoupConst>,
    pub lift: Vec<MapJob>,
    pub lift_consts: Vec<ShoupConst>,
    pub ntt: Vec<LimbJob>,
    pub combine: Vec<MapJob>,
    pub combine_consts: Vec<ShoupConst>,
}

/// Everything for one level.
#[derive(Debug, Clone)]
pub struct LevelPlan {
    pub level: usize,
    /// |Q_l ∪ P|
    pub width: usize,
    /// Ring indices of Q_l ∪ P.
    pub qp: Vec<u32>,
    pub decompose: Option<DecomposePlan>,
    pub mod_down: Option<ModDownPlan>,
    pub rescale: Option<RescalePlan>,
    /// Every limb of a ciphertext `[3][level]` with its modulus (NTTs, copies, additions); a
    /// degree-1 ciphertext takes the first `2 × level`.
    pub ct_limbs: Vec<MapJob>,
}

impl RescalePlan {
    /// The plan's lists for a ciphertext of `parts` parts (2 or 3).
    pub fn for_parts(&self, parts: usize) -> RescaleJobs<'_> {
        let per = self.lift.len() / 3;
        RescaleJobs {
            intt_last: &self.intt_last[..parts],
            add_half: &self.add_half[..parts],
            lift: &self.lift[..parts * per],
            ntt: &self.ntt[..parts * per],
            combine: &self.combine[..parts * per],
        }
    }
}

/// A [`RescalePlan`]'s lists for one number of parts.
pub struct RescaleJobs<'a> {
    pub intt_last: &'a [LimbJob],
    pub add_half: &'a [MapJob],
    pub lift: &'a [MapJob],
    pub ntt: &'a [LimbJob],
    pub combine: &'a [MapJob],
}

impl LevelPlan {
    pub fn new(rlwe: &RlweContext, level: usize) -> Self {
        let k = rlwe.num_p();
        let qpb = rlwe.qp_basis(level);
        let width = qpb.len();
        let ct_limbs = (0..3 * level).map(|i| map(i, i, i % level, 0)).collect();
        Self {
            level,
            width,
            qp: qpb.iter().map(|&i| i as u32).collect(),
            decompose: (k > 0).then(|| decompose(rlwe, level)),
            mod_down: (k > 0).then(|| mod_down(rlwe, level)),
            rescale: (level >= 2).then(|| rescale(rlwe, level)),
            ct_limbs,
        }
    }
}

fn digit_ranges(rlwe: &RlweContext, level: usize) -> Vec<Range<usize>> {
    rlwe.digits()
        .iter()
        .map(|r| r.start..r.end.min(level))
        .take_while(|r| !r.is_empty())
        .collect()
}

fn decompose(rlwe: &RlweContext, level: usize) -> DecomposePlan {
    let qpb = rlwe.qp_basis(level);
    let width = qpb.len();
    let ranges = digit_ranges(rlwe, level);
    let (mut prepare, mut prepare_consts) = (Vec::new(), Vec::new());
    let (mut extend, mut rows, mut ntt, mut own) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (j, range) in ranges.iter().enumerate() {
        let ext = rlwe.extender_from_digit(range.clone());
        for (i, c) in range.clone().zip(ext.prepare_consts(true)) {
            prepare.push(map(i, i, i, prepare_consts.len()));
            prepare_consts.push(*c);
        }
        let outside: Vec<(usize, usize)> = qpb
            .iter()
            .enumerate()
            .filter(|(_, idx)| !range.contains(idx))
            .map(|(pos, &idx)| (j * width + pos, idx))
            .collect();
        ntt.extend(outside.iter().map(|&(dst, idx)| limb(dst, idx)));
        extend.extend(extend_jobs(
            &ext,
            range.start,
            outside.into_iter(),
            &mut rows,
        ));
        for (pos, &idx) in qpb.iter().enumerate().filter(|(_, i)| range.contains(i)) {
            own.push(map(j * width + pos, idx, idx, 0));
        }
    }
    DecomposePlan {
        digits: ranges.len(),
        raise: ExtendPlan {
            intt: (0..level).map(|i| limb(i, i)).collect(),
            prepare,
            prepare_consts,
            y_limbs: level,
            extend,
            rows,
            ntt,
        },
        own,
    }
}

fn mod_down(rlwe: &RlweContext, level: usize) -> ModDownPlan {
    let (k, big_l) = (rlwe.num_p(), rlwe.max_level());
    let width = level + k;
    let from_p = rlwe
        .extender_from_p()
        .expect("a ring with special primes has an extender from P");
    let consts = from_p.prepare_consts(true);
    let (mut intt, mut prepare, mut extend, mut ntt, mut combine) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut rows = Vec::new();
    for c in 0..2 {
        for i in 0..k {
            intt.push(limb(c * width + level + i, big_l + i));
            prepare.push(map(c * k + i, c * width + level + i, big_l + i, i));
        }
        let targets = (0..level).map(|i| (c * level + i, i));
        extend.extend(extend_jobs(from_p, c * k, targets, &mut rows));
        for i in 0..level {
            ntt.push(limb(c * level + i, i));
            combine.push(map(c * level + i, c * width + i, i, i));
        }
    }
    ModDownPlan {
        from_p: ExtendPlan {
            intt,
            prepare,
            prepare_consts: consts.to_vec(),
            y_limbs: 2 * k,
            extend,
            rows,
            ntt,
        },
        combine,
        combine_consts: rlwe.p_inv_mod_q()[..level].to_vec(),
    }
}

fn rescale(rlwe: &RlweContext, level: usize) -> RescalePlan {
    let (inv_last, half_last) = rlwe.rescale_consts(level).parts();
    let last = level - 1;
    let q_last = rlwe.q_modulus(last).value();
    let (mut intt_last, mut add_half, mut lift, mut ntt, mut combine) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for c in 0..3 {
        intt_last.push(limb(c * level + last, last));
        add_half.push(map(c * level + last, c * level + last, last, 0));
        for i in 0..last {
            lift.push(map(c * last + i, c * level + last, i, i));
            ntt.push(limb(c * last + i, i));
            combine.push(map(c * last + i, c * level + i, i, i));
        }
    }
    RescalePlan {
        intt_last,
        add_half,
        half: vec![ShoupConst {
            w: q_last / 2,
            w_shoup: 0,
        }],
        lift,
        lift_consts: half_last
            .iter()
            .map(|&w| ShoupConst { w, w_shoup: 0 })
            .collect(),
        ntt,
        combine,
        combine_consts: inv_last.to_vec(),
    }
}
