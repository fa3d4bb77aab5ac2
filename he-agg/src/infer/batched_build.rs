//! From a lowered network to the batched packing's operations, segment by segment: each map's
//! integer weights at the level it runs at, activations with their c per value, residual
//! blocks' keep and add, and map → activation → map fused.
//!
//! Scales are followed exactly as the backend will compute them, and every map is given the
//! weight multiplier that lands its output on the scale wanted: the default scale, or, where a
//! block's identity shortcut is added next, the scale of the kept input; a mapped shortcut
//! lands on the body's scale. So the two paths of a block always meet at one scale, and a
//! segment's values are refreshed (at that scale) into the next one.

use std::collections::HashMap;

use crate::ckks::CkksContext;

use super::batched_ops::{
    ActShift, BatchedLinear, BatchedOp, CHUNK_ROWS, FusedChunk, integer_rows, make_groups,
};
use super::batched_spec::BatchedSpec;
use super::error::InferError;
use super::lower::{Affine, Lowered, Op, Shift};

/// The first map of a fused pair: its integer rows, bias, multiplier and level.
struct Rows<'a> {
    rows: Vec<Vec<(u32, i64)>>,
    bias: &'a [f64],
    multiplier: f64,
    level: usize,
}

/// The fused map → activation → map in chunks of the first map's rows; `c[r]` is the
/// activation's c of the first map's output r.
fn fused_chunks(
    ctx: &CkksContext,
    first: Rows,
    c: &ActShift,
    second: Vec<Vec<(u32, i64)>>,
    second_level: usize,
) -> Vec<FusedChunk> {
    let (first_bias, first_multiplier) = (first.bias, first.multiplier);
    let groups = make_groups(
        ctx,
        first.level,
        first
            .rows
            .into_iter()
            .enumerate()
            .map(|(o, r)| (o as u32, r))
            .collect(),
    );
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < groups.len() {
        let mut members = Vec::new();
        let mut rows = 0;
        while i < groups.len() && (rows == 0 || rows + groups[i].rows.len() <= CHUNK_ROWS) {
            rows += groups[i].rows.len();
            members.push(groups[i].clone());
            i += 1;
        }
        // local numbering of the chunk's rows (= the second map's columns it feeds)
        let mut local = HashMap::new();
        let mut bias = Vec::with_capacity(rows);
        let mut shift = Vec::with_capacity(rows);
        for g in &mut members {
            for r in &mut g.rows {
                let l = local.len() as u32;
                local.insert(*r, l);
                bias.push(first_bias[*r as usize]);
                shift.push(c.at(*r as usize));
                *r = l;
            }
        }
        let second_rows = second
            .iter()
            .enumerate()
            .map(|(o, row)| {
                (
                    o as u32,
                    row.iter()
                        .filter_map(|&(c, w)| local.get(&c).map(|&l| (l, w)))
                        .collect::<Vec<_>>(),
                )
            })
            .filter(|(_, r)| !r.is_empty())
            .collect();
        chunks.push(FusedChunk {
            first: BatchedLinear {
                groups: members,
                bias,
                multiplier: first_multiplier,
            },
            c: shift,
            second: make_groups(ctx, second_level, second_rows),
        });
    }
    chunks
}

/// Whether an activation of `width` values leaves its products unrelinearized for the map
/// `next`: only where that map has fewer outputs (it is then linear in all three parts, and
/// relinearizing its outputs is cheaper); otherwise the map would run over three parts for
/// nothing.
fn lazy_before(next: Option<&Op>, width: usize) -> bool {
    matches!(next, Some(Op::Linear(m)) if m.n_out() < width)
}

fn act_shift(c: &Shift) -> ActShift {
    match c {
        Shift::Same(c) => ActShift::Same(*c),
        Shift::Each(v) => ActShift::Each(v.clone()),
    }
}

/// What the builder follows through a segment: the level and scale of the current values,
/// and those of every kept block input.
struct Cursor<'a> {
    ctx: &'a CkksContext,
    q: Vec<f64>,
    delta: f64,
    level: usize,
    scale: f64,
    kept: Vec<(usize, f64)>,
}

impl Cursor<'_> {
    /// A map at the current level to scale `target`: its weights and multiplier.
    fn linear(&mut self, m: &Affine, target: f64) -> Result<BatchedLinear, InferError> {
        if self.level < 2 {
            return Err(InferError::ModelMismatch("a map below the last level"));
        }
        let multiplier = self.q[self.level - 1] * target / self.scale;
        let rows = integer_rows(m, multiplier, self.level)?;
        let out = BatchedLinear {
            groups: make_groups(
                self.ctx,
                self.level,
                rows.into_iter()
                    .enumerate()
                    .map(|(o, r)| (o as u32, r))
                    .collect(),
            ),
            bias: m.bias.clone(),
            multiplier,
        };
        self.level -= 1;
        self.scale = target;
        Ok(out)
    }

    /// The scale a map before `next` should land on: the kept input's when `next` adds a
    /// block's identity shortcut, the default otherwise.
    fn target_before(&self, next: Option<&Op>) -> f64 {
        match (next, self.kept.last()) {
            (Some(Op::AddShortcut { map: None }), Some(&(_, s))) => s,
            _ => self.delta,
        }
    }

    /// An activation x·(x + c) (times `post` after): its levels and scale.
    fn activation(&mut self, post: Option<f64>) -> Result<(), InferError> {
        let need = 1 + usize::from(post.is_some());
        if self.level < need + 1 {
            return Err(InferError::ModelMismatch(
                "an activation below the last level",
            ));
        }
        self.scale = self.scale * self.scale / self.q[self.level - 1];
        self.level -= need;
        Ok(())
    }
}

/// An upper estimate of the memory a batch's values take at once: the largest over the
/// operations of what is alive while each runs (the kept block inputs, its inputs, its
/// products; a ciphertext of `parts` × `level` limbs of N words).
struct Footprint {
    limb_bytes: usize,
    width: usize,
    /// the current values are the innermost kept ones (not counted twice)
    current_kept: bool,
    kept: Vec<usize>,
    peak: usize,
}

impl Footprint {
    fn ct(&self, values: usize, parts: usize, level: usize) -> usize {
        values * parts * level * self.limb_bytes
    }
    fn input(&mut self, level: usize) -> usize {
        let kept = std::mem::replace(&mut self.current_kept, false);
        if kept {
            0
        } else {
            self.ct(self.width, 2, level)
        }
    }
    fn note(&mut self, live: usize) {
        let kept: usize = self.kept.iter().sum();
        self.peak = self.peak.max(kept + live);
    }
    fn linear(&mut self, level: usize, out: usize) {
        let live = self.input(level) + self.ct(out, 2, level);
        self.note(live);
        self.width = out;
    }
    fn fused(&mut self, level: usize, mid: usize, out: usize) {
        let parts = if out < mid { 3 } else { 2 };
        let live = self.input(level)
            + self.ct(out, parts, level - 2)
            + self.ct(mid.min(CHUNK_ROWS), 3, level - 1);
        self.note(live);
        self.width = out;
    }
    fn activation(&mut self, level: usize) {
        let live = self.input(level) + self.ct(self.width, 3, level);
        self.note(live);
    }
    fn save(&mut self, level: usize) {
        self.kept.push(self.ct(self.width, 2, level));
        self.current_kept = true;
    }
    fn add(&mut self, body_level: usize, map_level: Option<usize>) {
        let kept = self.kept.pop().unwrap_or(0);
        let live = kept
            + self.ct(self.width, 2, body_level)
            + map_level.map_or(0, |l| self.ct(self.width, 2, l));
        self.note(live);
    }
    fn refresh(&mut self, low: usize, top: usize) {
        let live = self.ct(self.width, 2, low) + self.ct(self.width, 2, top);
        self.note(live);
    }
}

/// Every segment's operations for `spec` (whose cuts were made on `low`), and an upper
/// estimate of the bytes a batch's values take at once ([`Footprint`]).
pub(crate) fn build_segments(
    ctx: &CkksContext,
    spec: &BatchedSpec,
    low: &Lowered,
) -> Result<(Vec<Vec<BatchedOp>>, usize), InferError> {
    let mut fp = Footprint {
        limb_bytes: ctx.n() * 8,
        width: low.input_len,
        current_kept: false,
        kept: Vec::new(),
        peak: 0,
    };
    let mut bounds = vec![0];
    bounds.extend(spec.cuts());
    bounds.push(low.ops.len());
    let mut cur = Cursor {
        ctx,
        q: ctx.params().rlwe().q().iter().map(|&q| q as f64).collect(),
        delta: ctx.params().default_scale(),
        level: spec.input_level(),
        scale: spec.input_scale(),
        kept: Vec::new(),
    };
    let mut segments = Vec::with_capacity(bounds.len() - 1);
    for w in bounds.windows(2) {
        let (start, end) = (w[0], w[1]);
        // a refreshed segment starts at the top, at the scale its values were refreshed at
        cur.level = spec.input_level();
        let ops = &low.ops[start..end];
        let mut out = Vec::with_capacity(ops.len());
        let mut k = 0;
        while k < ops.len() {
            match (&ops[k], ops.get(k + 1), ops.get(k + 2)) {
                (Op::Linear(a), Some(Op::Activation { c, post: None }), Some(Op::Linear(b))) => {
                    let first_level = cur.level;
                    fp.fused(first_level, a.n_out(), b.n_out());
                    if first_level < 4 {
                        return Err(InferError::ModelMismatch(
                            "a fused map below the last level",
                        ));
                    }
                    let first_multiplier = cur.q[first_level - 1] * cur.delta / cur.scale;
                    let first_rows = integer_rows(a, first_multiplier, first_level)?;
                    cur.level -= 1;
                    cur.scale = cur.delta;
                    let c = act_shift(c);
                    cur.activation(None)?;
                    let second_level = cur.level;
                    let target = cur.target_before(ops.get(k + 3));
                    let multiplier = cur.q[second_level - 1] * target / cur.scale;
                    let second = integer_rows(b, multiplier, second_level)?;
                    cur.level -= 1;
                    cur.scale = target;
                    out.push(BatchedOp::Fused {
                        lazy: b.n_out() < a.n_out(),
                        chunks: fused_chunks(
                            ctx,
                            Rows {
                                rows: first_rows,
                                bias: &a.bias,
                                multiplier: first_multiplier,
                                level: first_level,
                            },
                            &c,
                            second,
                            second_level,
                        ),
                        multiplier,
                        bias: b.bias.clone(),
                    });
                    k += 3;
                }
                (Op::Linear(a), next, _) => {
                    fp.linear(cur.level, a.n_out());
                    let target = cur.target_before(next);
                    out.push(BatchedOp::Linear(cur.linear(a, target)?));
                    k += 1;
                }
                (Op::Activation { c, post }, next, _) => {
                    fp.activation(cur.level);
                    cur.activation(*post)?;
                    let width = match c {
                        Shift::Each(v) => v.len(),
                        Shift::Same(_) => usize::MAX,
                    };
                    out.push(BatchedOp::Activation {
                        c: act_shift(c),
                        post: *post,
                        lazy: post.is_none() && lazy_before(next, width),
                    });
                    k += 1;
                }
                (Op::Save, _, _) => {
                    fp.save(cur.level);
                    cur.kept.push((cur.level, cur.scale));
                    out.push(BatchedOp::Save);
                    k += 1;
                }
                (Op::AddShortcut { map }, _, _) => {
                    let (kept_level, kept_scale) = cur.kept.pop().ok_or(
                        InferError::ModelMismatch("a shortcut without its block's input"),
                    )?;
                    let body = (cur.level, cur.scale);
                    fp.add(body.0, map.as_ref().map(|_| body.0 + 1));
                    match map {
                        Some(m) => {
                            // the kept values dropped to one level above the body's, so the
                            // map's rescale lands on the body's level and scale
                            if kept_level <= body.0 {
                                return Err(InferError::ModelMismatch(
                                    "a block's body spends no level beside its mapped shortcut",
                                ));
                            }
                            let mut side = Cursor {
                                ctx,
                                q: cur.q.clone(),
                                delta: cur.delta,
                                level: body.0 + 1,
                                scale: kept_scale,
                                kept: Vec::new(),
                            };
                            let lin = side.linear(m, body.1)?;
                            out.push(BatchedOp::AddShortcut {
                                map: Some(lin),
                                level: body.0 + 1,
                            });
                        }
                        None => {
                            if (kept_scale - body.1).abs() > 1e-9 * body.1 {
                                return Err(InferError::ModelMismatch(
                                    "a block's identity shortcut meets its body at another scale",
                                ));
                            }
                            out.push(BatchedOp::AddShortcut {
                                map: None,
                                level: body.0,
                            });
                        }
                    }
                    k += 1;
                }
            }
        }
        if !cur.kept.is_empty() {
            return Err(InferError::ModelMismatch(
                "a segment ends inside a residual block",
            ));
        }
        if end < low.ops.len() {
            if cur.level < spec.refresh_level() {
                return Err(InferError::ModelMismatch(
                    "a segment ends below its refresh level",
                ));
            }
            fp.refresh(spec.refresh_level(), spec.input_level());
        }
        segments.push(out);
    }
    Ok((segments, fp.peak))
}
