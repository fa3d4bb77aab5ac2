//! The latency plan: one image per ciphertext — or per few ciphertexts for a large image —
//! LoLa-style dense packing.
//!
//! - Input: when the first map ends in a convolution (or pooling) with P output positions, the
//!   requester sends the image in im2col layout — slot tap·P + π(p) holds the tap-th input value
//!   of position p's receptive field — so the first map is a *direct* diagonal product with only
//!   taps + channels − 1 diagonals. When the rows fit one ciphertext they are repeated with the
//!   smallest power-of-two period that holds them (and the output comes out repeated with it);
//!   otherwise they continue over several ciphertexts (a patch embedding of a 256×256 image:
//!   8 ciphertexts of 8192 slots, a permutation of the pixels, no repetition) and the first map
//!   sums over all of them before its giant rotations. Otherwise the input is sent replicated
//!   with period next_pow2(len).
//! - Every later map with a spatial output is a *direct* product between the position orders
//!   [`super::layout`] chooses (space-to-depth where the next map strides), or — where cheaper —
//!   a *hybrid* product, as every dense layer is; all run baby-step/giant-step with hoisted baby
//!   rotations, each giant step rescaled first so its rotation runs a level lower.
//! - Activations are slot-wise; their a is folded into a map (see `lower`).
//!
//! The plan is the server's (it holds the weights, as diagonals); [`InferenceSpec`] is what a
//! requester needs: parameters, input layout, levels, output slots and the exact Galois steps
//! to generate keys for.

use std::sync::Arc;

use crate::ckks::Parameters;

use super::diagonals;
use super::error::InferError;
use super::layout::{self, MapKind};
use super::lower::{Lowered, Op, Shift, lower};
use super::multiplex;
use super::network::Network;
use super::params::ParamPolicy;
use super::segments::{Levels, choose_levels};
use super::spec::InferenceSpec;
pub(crate) use super::stages::{LinearStage, Stage, StageInfo, StageShift};
use super::stages::{bias_slots, linear_stage, replication, spread};
use super::trace::trace;

/// Most ciphertexts one image may span (a 512×512 image under a 16×16 patch embedding takes 32
/// of 8192 slots).
pub const MAX_INPUT_CIPHERTEXTS: usize = 64;

/// A network compiled for one-image-per-ciphertext evaluation (the server's side).
#[derive(Clone, Debug)]
pub struct InferencePlan {
    spec: Arc<InferenceSpec>,
    pub(crate) stages: Vec<Stage>,
    /// where each segment after the first starts (stage indices); a refresh comes before each
    pub(crate) cuts: Vec<usize>,
}

/// How the first map reads the image.
enum FirstLayout {
    /// Receptive fields per output position (P = positions), `taps` the largest.
    Im2col { fields: Vec<Vec<u32>>, taps: usize },
    /// Replicated with this power-of-two period, natural order.
    Replicated(usize),
}

fn choose_first_layout(low: &Lowered, max_slots: usize) -> Result<FirstLayout, InferError> {
    let replicated = || -> Result<FirstLayout, InferError> {
        let p = low.input_len.next_power_of_two();
        if p > max_slots {
            return Err(InferError::TooWide {
                needed: p,
                max: max_slots,
            });
        }
        Ok(FirstLayout::Replicated(p))
    };
    let Some(Op::Linear(map)) = low.ops.first() else {
        return replicated();
    };
    let Some((fields, taps)) = layout::receptive_fields(map) else {
        return replicated();
    };
    let width = taps * fields.len();
    if width > max_slots * MAX_INPUT_CIPHERTEXTS {
        return replicated();
    }
    if low.input_len.next_power_of_two() > max_slots {
        // too large for one ciphertext: im2col over several
        return Ok(FirstLayout::Im2col { fields, taps });
    }
    // compare diagonal counts: im2col gives taps + channels − 1, the hybrid product on the raw
    // input at most min(p_in, p_out)
    let channels = map.n_out() / fields.len();
    let hybrid = diagonals::hybrid_count(map, low.input_len.next_power_of_two());
    if taps + channels - 1 <= hybrid {
        Ok(FirstLayout::Im2col { fields, taps })
    } else {
        replicated()
    }
}

impl InferencePlan {
    /// Compiles `net` with parameters chosen from its depth and width by `policy`; a network
    /// deeper than the chosen ring holds is cut into segments with a refresh between them
    /// (where the policy allows it).
    pub fn new(net: &Network, policy: &ParamPolicy) -> Result<Self, InferError> {
        let low = lower(net)?;
        let max_slots = 1usize << (policy.max_log_n.clamp(10, 15) - 1);
        let first = choose_first_layout(&low, max_slots)?;
        let needed = needed_slots(&low, &first);
        let levels = choose_levels(&low, needed, policy)?;
        Self::build(net, low, first, levels, policy.step_primes as usize)
    }

    /// Compiles `net` for given parameters (refused when they lack slots or levels; never cut).
    pub fn with_parameters(net: &Network, params: Parameters) -> Result<Self, InferError> {
        let low = lower(net)?;
        let first = choose_first_layout(&low, params.slots())?;
        let needed = needed_slots(&low, &first);
        if needed > params.slots() {
            return Err(InferError::TooFewSlots {
                slots: params.slots(),
                needed,
            });
        }
        if low.depth() + 1 > params.max_level() {
            return Err(InferError::TooFewLevels {
                levels: params.max_level() - 1,
                depth: low.depth(),
            });
        }
        let input_level = low.depth() + 1;
        let levels = Levels {
            params,
            input_level,
            cuts: Vec::new(),
            refresh_level: 1,
        };
        Self::build(net, low, first, levels, 1)
    }

    fn build(
        net: &Network,
        low: Lowered,
        first: FirstLayout,
        levels: Levels,
        step_primes: usize,
    ) -> Result<Self, InferError> {
        let Levels {
            params,
            input_level,
            cuts,
            refresh_level,
        } = levels;
        let slots = params.slots();
        let depth = low.depth();
        let pinned = low.has_blocks() || !cuts.is_empty();
        let tr = trace(
            &low,
            &params,
            input_level,
            step_primes,
            &cuts,
            refresh_level,
            pinned,
        )?;
        let inputs = layout::op_inputs(&low, net.input());
        let blocks = low.has_blocks();
        // residual networks: the multiplexed layout, known before the period
        let mux = match blocks {
            true => Some(multiplex::layouts(&low, &inputs)?),
            false => None,
        };
        let tap_stride = |positions: usize| {
            mux.as_ref()
                .and_then(|m| m.first.as_ref())
                .map_or(positions, |f| f.0)
        };
        let first_extent = |n_out: usize| {
            mux.as_ref()
                .map_or(n_out, |m| layout::extent(m.slots[0].as_deref(), n_out))
        };
        // the im2col rows: repeated in one ciphertext when they fit, else over several
        let (input_map, mut period, input_cts, im2col) = match &first {
            FirstLayout::Im2col { fields, taps } => {
                let positions = fields.len();
                let n_out = match low.ops.first() {
                    Some(Op::Linear(m)) => m.n_out(),
                    _ => 0,
                };
                let width = taps * tap_stride(positions);
                if width <= slots {
                    let period = width
                        .max(first_extent(n_out))
                        .next_power_of_two()
                        .min(slots);
                    (Vec::new(), period, 1, true)
                } else {
                    let cts = width.div_ceil(slots);
                    if cts > MAX_INPUT_CIPHERTEXTS {
                        return Err(InferError::TooWide {
                            needed: width,
                            max: slots * MAX_INPUT_CIPHERTEXTS,
                        });
                    }
                    (Vec::new(), slots, cts, true)
                }
            }
            FirstLayout::Replicated(p) => (
                (0..slots)
                    .map(|t| {
                        let j = t % p;
                        if j < low.input_len {
                            j as u32
                        } else {
                            u32::MAX
                        }
                    })
                    .collect(),
                *p,
                1,
                false,
            ),
        };
        let lay = match mux {
            Some(m) => m,
            None => {
                let (orders, kinds) = layout::choose_orders(&low, &inputs, period, im2col);
                layout::from_orders(&low, orders, kinds)
            }
        };
        let mut input_map = input_map;
        // the first map's outputs as channel blocks: the block size and each position's slot
        let (tap_block, pos): (usize, Vec<u32>) = match (&first, &lay.first) {
            (_, Some((b, pos))) => (*b, pos.clone()),
            (FirstLayout::Im2col { fields, .. }, None) => {
                (fields.len(), (0..fields.len() as u32).collect())
            }
            _ => (0, Vec::new()),
        };
        if let FirstLayout::Im2col { fields, .. } = &first {
            // slot tap·B + π(p) holds the tap-th value of position p's field, repeated with the
            // period in one ciphertext or continued over several
            input_map = vec![u32::MAX; input_cts * slots];
            for (p, f) in fields.iter().enumerate() {
                for (tap, &j) in f.iter().enumerate() {
                    let g = tap * tap_block + pos[p] as usize;
                    if input_cts == 1 {
                        let mut s = g;
                        while s < slots {
                            input_map[s] = j;
                            s += period;
                        }
                    } else {
                        input_map[g] = j;
                    }
                }
            }
        }
        let mut stages = Vec::with_capacity(low.ops.len());
        let mut steps: Vec<i64> = Vec::new();
        let mut relinearize = false;
        // where the values the next op reads sit (None: value j at slot j)
        let mut cur: Option<Vec<u32>> = None;
        // kept values: their layout and period
        let mut kept: Vec<(Option<Vec<u32>>, usize)> = Vec::new();
        for (k, op) in low.ops.iter().enumerate() {
            let level = tr.levels[k];
            match op {
                Op::Linear(map) => {
                    let out = lay.slots[k].as_deref();
                    let out_slot = |o: usize| layout::slot(out, o);
                    let (diags, fold, next_period) = if k == 0 && im2col {
                        let FirstLayout::Im2col { fields, .. } = &first else {
                            unreachable!("im2col is the first layout")
                        };
                        let positions = fields.len();
                        let d = diagonals::direct(
                            map,
                            input_cts,
                            slots,
                            period,
                            |o, j| {
                                let p = o % positions;
                                let tap = fields[p].binary_search(&j).expect("j is in p's field");
                                let g = tap * tap_block + pos[p] as usize;
                                (g / slots, g % slots)
                            },
                            out_slot,
                        );
                        (d, Vec::new(), period)
                    } else if lay.kinds[k] == MapKind::Direct {
                        let extent = layout::extent(out, map.n_out()).max(1).next_power_of_two();
                        let period = period.max(extent).min(slots);
                        let inp = cur.as_deref();
                        let d = diagonals::direct(
                            map,
                            1,
                            slots,
                            period,
                            |_, j| (0, layout::slot(inp, j as usize)),
                            out_slot,
                        );
                        (d, Vec::new(), period)
                    } else {
                        let remapped = match cur.as_deref() {
                            Some(l) => layout::remap_to(map, l, period),
                            None => map.clone(),
                        };
                        let (d, p_out, fold) = diagonals::hybrid(&remapped, period, slots);
                        (vec![d], fold, p_out)
                    };
                    let bias = match lay.kinds[k] {
                        MapKind::Direct => bias_slots(&map.bias, slots, next_period, out_slot),
                        MapKind::Hybrid => bias_slots(&map.bias, slots, next_period, |o| o),
                    };
                    // a residual network's smaller output replicated with its own period
                    let extent = layout::extent(out, map.n_out()).max(1).next_power_of_two();
                    let (replicate, next_period) = match blocks && lay.kinds[k] == MapKind::Direct {
                        true if extent < next_period => {
                            (replication(extent, next_period, slots), extent)
                        }
                        _ => (Vec::new(), next_period),
                    };
                    let parts = (diags, fold, replicate);
                    let stage = linear_stage(parts, bias, &params, level, &tr, k, &mut steps);
                    stages.push(Stage::Linear(stage));
                    period = next_period;
                    cur = match lay.kinds[k] {
                        MapKind::Direct => out.map(<[u32]>::to_vec),
                        MapKind::Hybrid => None,
                    };
                }
                Op::Activation { c, post } => {
                    relinearize = true;
                    let c = match c {
                        Shift::Same(c) => StageShift::Same(*c),
                        Shift::Each(v) => {
                            let inp = cur.as_deref();
                            StageShift::Slots(spread(v, slots, period, |j| layout::slot(inp, j)))
                        }
                    };
                    stages.push(Stage::Activation {
                        level,
                        scale: tr.scales[k],
                        c,
                        post: *post,
                    });
                }
                Op::Save => {
                    kept.push((cur.clone(), period));
                    stages.push(Stage::Save);
                }
                Op::AddShortcut { map } => {
                    let (from, kept_period) = kept
                        .pop()
                        .ok_or(InferError::ModelMismatch("blocks unbalanced"))?;
                    let map = match map {
                        None if kept_period != period => {
                            return Err(InferError::ModelMismatch(
                                "an identity shortcut across a change of period",
                            ));
                        }
                        None => None,
                        Some(m) => {
                            // from the kept value's layout (and period) to the body's output
                            // layout, replicated as the body's output is
                            let to = cur.as_deref();
                            let out_slot = |o: usize| layout::slot(to, o);
                            let at = kept_period.max(period);
                            let d = diagonals::direct(
                                m,
                                1,
                                slots,
                                at,
                                |_, j| (0, layout::slot(from.as_deref(), j as usize)),
                                out_slot,
                            );
                            let bias = bias_slots(&m.bias, slots, at, out_slot);
                            let lvl = tr.kept_levels[k];
                            let parts = (d, Vec::new(), replication(period, at, slots));
                            Some(linear_stage(parts, bias, &params, lvl, &tr, k, &mut steps))
                        }
                    };
                    stages.push(Stage::AddShortcut { map });
                }
            }
        }
        // the logits must come out in their natural order: the last map is flat (dense), or
        // its spatial output is read in its order
        if let Some(Stage::Linear(_)) = stages.last()
            && let Some(l) = cur.as_deref()
            && l.iter().enumerate().any(|(p, &q)| p as u32 != q)
        {
            return Err(InferError::ModelMismatch(
                "the last map's output is not in natural order",
            ));
        }
        let mut galois_steps: Vec<i64> = steps
            .into_iter()
            .map(|s| s.rem_euclid(slots as i64))
            .filter(|&s| s != 0)
            .collect();
        galois_steps.sort_unstable();
        galois_steps.dedup();
        Ok(Self {
            spec: Arc::new(InferenceSpec {
                params,
                input_len: low.input_len,
                input_map,
                input_level,
                output_len: low.output_len,
                galois_steps,
                relinearize,
                depth,
                step_primes,
                output_level: tr.output_level,
                refreshes: tr.refreshes.clone(),
            }),
            stages,
            cuts,
        })
    }

    /// The requester's part of the plan.
    pub fn spec(&self) -> &InferenceSpec {
        &self.spec
    }

    pub(crate) fn shared_spec(&self) -> Arc<InferenceSpec> {
        self.spec.clone()
    }

    /// The levels each segment spends (its depth: the rescaling steps of its main path).
    pub fn segment_depths(&self) -> Vec<usize> {
        let k = self.spec.step_primes();
        let top = self.spec.input_level();
        let mut starts = vec![0];
        starts.extend(&self.cuts);
        starts.push(self.stages.len());
        starts
            .windows(2)
            .map(|w| {
                let lowest = self.stages[w[0]..w[1]]
                    .iter()
                    .filter_map(|st| match st {
                        Stage::Linear(l) => Some(l.level - k),
                        Stage::Activation { level, post, .. } => {
                            Some(level - k * (1 + usize::from(post.is_some())))
                        }
                        Stage::Save | Stage::AddShortcut { .. } => None,
                    })
                    .min()
                    .unwrap_or(top);
                (top - lowest) / k
            })
            .collect()
    }

    /// Per-stage costs (a block's kept value and identity shortcut cost nothing and are left
    /// out; a mapped shortcut is a linear stage).
    pub fn stage_info(&self) -> Vec<StageInfo> {
        self.stages
            .iter()
            .filter_map(|s| match s {
                Stage::Linear(l) | Stage::AddShortcut { map: Some(l) } => Some(StageInfo {
                    linear: true,
                    level: l.level,
                    inputs: l.bsgs.inputs,
                    diagonals: l.bsgs.products(),
                    baby_steps: l.bsgs.baby_rotations(),
                    giant_steps: l.bsgs.giants.iter().filter(|g| g.step != 0).count(),
                    fold_steps: l.fold_steps.len(),
                }),
                Stage::Activation { level, .. } => Some(StageInfo {
                    linear: false,
                    level: *level,
                    inputs: 1,
                    diagonals: 0,
                    baby_steps: 0,
                    giant_steps: 0,
                    fold_steps: 0,
                }),
                Stage::Save | Stage::AddShortcut { map: None } => None,
            })
            .collect()
    }

    /// Key switches per inference: (hoisted baby rotations, other rotations,
    /// relinearizations), for reports.
    pub fn key_switches(&self) -> (usize, usize, usize) {
        let (mut baby, mut other, mut relin) = (0, 0, 0);
        for s in &self.stages {
            match s {
                Stage::Linear(l) | Stage::AddShortcut { map: Some(l) } => {
                    baby += l.bsgs.baby_rotations();
                    other +=
                        l.bsgs.giants.iter().filter(|g| g.step != 0).count() + l.fold_steps.len();
                }
                Stage::Activation { post, .. } => relin += 1 + usize::from(post.is_some()),
                Stage::Save | Stage::AddShortcut { map: None } => {}
            }
        }
        (baby, other, relin)
    }

    /// Diagonal products per inference (plaintext or ciphertext multiplications).
    pub fn diagonal_count(&self) -> usize {
        self.stages
            .iter()
            .map(|s| match s {
                Stage::Linear(l) | Stage::AddShortcut { map: Some(l) } => l.bsgs.products(),
                _ => 0,
            })
            .sum()
    }
}

/// Slots the layouts need: every map's output and input. The im2col rows of the image do not
/// count: where they do not fit one ciphertext of the ring the maps need, they continue over
/// several (the same bytes, and every later operation on the smaller ring).
fn needed_slots(low: &Lowered, first: &FirstLayout) -> usize {
    let mut needed = match first {
        FirstLayout::Im2col { .. } => 1,
        FirstLayout::Replicated(p) => *p,
    };
    for (k, op) in low.ops.iter().enumerate() {
        match op {
            Op::Linear(m) => {
                needed = needed.max(m.n_out().next_power_of_two());
                if k > 0 || matches!(first, FirstLayout::Replicated(_)) {
                    needed = needed.max(m.n_in.next_power_of_two());
                }
            }
            Op::AddShortcut { map: Some(m) } => {
                needed = needed
                    .max(m.n_out().next_power_of_two())
                    .max(m.n_in.next_power_of_two());
            }
            _ => {}
        }
    }
    needed
}
