//! Where the values of each activation map sit in the slots.
//!
//! A map of C channels on an H×W grid sits at slot c·HW + π(y, x): channel-major, with a
//! position order π chosen for the map that reads it. Row-major is the default; when the next
//! map is strided (its output grid divides this one, by s_y × s_x), positions may instead be
//! ordered **space-to-depth**: π(y, x) = ((y mod s_y)·s_x + x mod s_x)·H'W' + π'(y div s_y,
//! x div s_x), nested on the next map's own order π'. The next map then reads whole blocks of H'W'
//! slots (a patch merge, kernel = stride, becomes a product of channels with one diagonal per
//! block offset), at the cost of more diagonals where a stride-1 map reads neighbours across
//! blocks. [`choose_orders`] tries both for every strided step and keeps the cheaper plan.
//!
//! The image itself is laid out by the requester in im2col form — slot tap·P + π(p) holds the
//! tap-th value of output position p's receptive field — so the first map has taps + channels − 1
//! diagonals whatever π is; when the rows do not fit one ciphertext they continue over several
//! (a patch embedding of a 256×256 image: 8 ciphertexts of 8192 slots).

use std::collections::HashSet;

use super::diagonals::{self, StepCosts};
use super::lower::{Affine, Lowered, Op};
use super::network::Shape;

/// Position orders of the outputs of every op (`None`: a flat output, or an activation).
pub(crate) type Orders = Vec<Option<Vec<u32>>>;

/// Receptive fields of the output positions of a map ending in CHW: the input indices each
/// position reads (sorted, so tap t of every position has the same relative place), and the
/// largest field.
pub(crate) fn receptive_fields(map: &Affine) -> Option<(Vec<Vec<u32>>, usize)> {
    let Shape::Chw([_, h, w]) = map.out_shape else {
        return None;
    };
    let positions = h * w;
    if positions < 2 {
        return None;
    }
    let mut fields: Vec<Vec<u32>> = vec![Vec::new(); positions];
    for (o, row) in map.rows.iter().enumerate() {
        fields[o % positions].extend(row.iter().map(|&(j, _)| j));
    }
    for f in &mut fields {
        f.sort_unstable();
        f.dedup();
    }
    let taps = fields.iter().map(Vec::len).max().unwrap_or(0);
    Some((fields, taps))
}

/// The input shape of every op.
pub(crate) fn op_inputs(low: &Lowered, input: [usize; 3]) -> Vec<Shape> {
    let mut cur = Shape::Chw(input);
    low.ops
        .iter()
        .map(|op| {
            let shape = cur;
            if let Op::Linear(a) = op {
                cur = a.out_shape;
            }
            shape
        })
        .collect()
}

fn row_major(h: usize, w: usize) -> Vec<u32> {
    (0..(h * w) as u32).collect()
}

/// The stride of `next` over a `[h, w]` grid, when its output grid divides it (and it strides).
fn stride_of(h: usize, w: usize, next: &Affine) -> Option<(usize, usize, usize, usize)> {
    let Shape::Chw([_, h2, w2]) = next.out_shape else {
        return None;
    };
    if h2 == 0 || w2 == 0 || !h.is_multiple_of(h2) || !w.is_multiple_of(w2) || (h == h2 && w == w2)
    {
        return None;
    }
    Some((h / h2, w / w2, h2, w2))
}

/// Space-to-depth order of a `[h, w]` grid for a next map of stride `(sy, sx)` onto `[h2, w2]`
/// ordered by `inner`.
fn nested(
    h: usize,
    w: usize,
    (sy, sx, h2, w2): (usize, usize, usize, usize),
    inner: &[u32],
) -> Vec<u32> {
    let mut order = vec![0u32; h * w];
    for y in 0..h {
        for x in 0..w {
            let block = (y % sy) * sx + x % sx;
            order[y * w + x] = (block * h2 * w2) as u32 + inner[(y / sy) * w2 + x / sx];
        }
    }
    order
}

/// The linear ops' indices in `low.ops`, in order.
fn linear_ops(low: &Lowered) -> Vec<usize> {
    (0..low.ops.len())
        .filter(|&k| matches!(low.ops[k], Op::Linear(_)))
        .collect()
}

fn affine(low: &Lowered, k: usize) -> &Affine {
    match &low.ops[k] {
        Op::Linear(a) => a,
        _ => unreachable!("linear_ops lists linear ops"),
    }
}

/// Orders for one choice of which strided steps nest (`nest[i]` for the i-th linear op's output).
fn orders_for(low: &Lowered, lin: &[usize], nest: &[bool]) -> Orders {
    let mut orders: Orders = vec![None; low.ops.len()];
    let mut inner: Option<Vec<u32>> = None;
    for (i, &k) in lin.iter().enumerate().rev() {
        let a = affine(low, k);
        let Shape::Chw([_, h, w]) = a.out_shape else {
            inner = None;
            continue;
        };
        let order = match (lin.get(i + 1), &inner, nest[i]) {
            (Some(&next), Some(inner_order), true) => match stride_of(h, w, affine(low, next)) {
                Some(st) => nested(h, w, st, inner_order),
                None => row_major(h, w),
            },
            _ => row_major(h, w),
        };
        inner = Some(order.clone());
        orders[k] = Some(order);
    }
    orders
}

/// Where every op's output values sit: a slot per value (`None`: value j at slot j, or the op
/// keeps its input's layout), how every map runs, and the first map's output as channel blocks
/// (block size, each position's slot within its block), which the im2col input follows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Layouts {
    pub slots: Vec<Option<Vec<u32>>>,
    pub kinds: Vec<MapKind>,
    pub first: Option<(usize, Vec<u32>)>,
}

/// Slot of value j in `layout` (j itself when natural).
pub(crate) fn slot(layout: Option<&[u32]>, j: usize) -> usize {
    layout.map_or(j, |l| l[j] as usize)
}

/// The extent of a layout of `n` values: the highest slot plus one.
pub(crate) fn extent(layout: Option<&[u32]>, n: usize) -> usize {
    layout.map_or(n, |l| l.iter().max().map_or(0, |&m| m as usize + 1))
}

/// The layouts of a sequential network from its position orders (channel-major, positions in
/// each map's order).
pub(crate) fn from_orders(low: &Lowered, orders: Orders, kinds: Vec<MapKind>) -> Layouts {
    let mut first = None;
    let slots = orders
        .iter()
        .enumerate()
        .map(|(k, order)| {
            let Op::Linear(map) = &low.ops[k] else {
                return None;
            };
            let Shape::Chw([c, h, w]) = map.out_shape else {
                return None;
            };
            let hw = h * w;
            let pos: Vec<u32> = match order {
                Some(o) => o.clone(),
                None => (0..hw as u32).collect(),
            };
            if k == 0 {
                first = Some((hw, pos.clone()));
            }
            order.as_ref().map(|_| {
                (0..c * hw)
                    .map(|j| ((j / hw) * hw) as u32 + pos[j % hw])
                    .collect()
            })
        })
        .collect();
    Layouts {
        slots,
        kinds,
        first,
    }
}

/// Slot of value j of a vector with this shape and order (identity when flat or unordered).
pub(crate) fn slot_of(shape: Shape, order: Option<&[u32]>, j: usize) -> usize {
    match (shape, order) {
        (Shape::Chw([_, h, w]), Some(order)) => {
            let hw = h * w;
            (j / hw) * hw + order[j % hw] as usize
        }
        _ => j,
    }
}

/// Nominal costs for comparing layouts before the parameters are known: a hoisted rotation, a
/// giant rotation and a diagonal product (a fraction of a key switch).
const NOMINAL: StepCosts = StepCosts {
    baby: 1.0,
    giant: 1.6,
};
const PRODUCT: f64 = 0.04;

/// How a map runs and what it costs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum MapKind {
    /// Diagonals between the chosen input and output orders.
    Direct,
    /// GAZELLE's hybrid product (outputs in natural order, replicated).
    Hybrid,
}

fn direct_cost(
    map: &Affine,
    in_shape: Shape,
    in_order: Option<&[u32]>,
    out_order: Option<&[u32]>,
    period: usize,
) -> f64 {
    let offsets = diagonals::direct_count(
        map,
        period,
        |_, j| (0, slot_of(in_shape, in_order, j as usize)),
        |o| slot_of(map.out_shape, out_order, o),
    );
    let d: Vec<i64> = offsets.into_iter().map(|(_, d)| d).collect();
    diagonals::bsgs_cost(std::slice::from_ref(&d), NOMINAL) + d.len() as f64 * PRODUCT
}

fn hybrid_cost(map: &Affine, in_shape: Shape, in_order: Option<&[u32]>, period: usize) -> f64 {
    let remapped = remap_inputs(map, in_shape, in_order, period);
    let p_out = map.n_out().next_power_of_two();
    let mut offsets = HashSet::new();
    for (row, entries) in remapped.rows.iter().enumerate() {
        for &(col, _) in entries {
            let delta = (col as usize + period - row % period) % period;
            offsets.insert(if p_out <= period {
                (delta % p_out) as i64
            } else {
                delta as i64
            });
        }
    }
    let d: Vec<i64> = offsets.into_iter().collect();
    let folds = (period / p_out.min(period)).trailing_zeros() as f64;
    diagonals::bsgs_cost(std::slice::from_ref(&d), NOMINAL)
        + d.len() as f64 * PRODUCT
        + folds * NOMINAL.giant
}

/// `map` reading its inputs at their slots (columns renumbered), for the hybrid product.
pub(crate) fn remap_inputs(
    map: &Affine,
    in_shape: Shape,
    in_order: Option<&[u32]>,
    period: usize,
) -> Affine {
    match in_order {
        None => map.clone(),
        Some(order) => {
            let full: Vec<u32> = (0..map.n_in)
                .map(|j| slot_of(in_shape, Some(order), j) as u32)
                .collect();
            remap_to(map, &full, period)
        }
    }
}

/// `map` reading input j at slot `layout[j]`.
pub(crate) fn remap_to(map: &Affine, layout: &[u32], period: usize) -> Affine {
    Affine {
        n_in: period.max(extent(Some(layout), map.n_in)),
        rows: map
            .rows
            .iter()
            .map(|row| {
                let mut r: Vec<(u32, f64)> =
                    row.iter().map(|&(j, w)| (layout[j as usize], w)).collect();
                r.sort_unstable_by_key(|e| e.0);
                r
            })
            .collect(),
        bias: map.bias.clone(),
        out_shape: map.out_shape,
    }
}

/// The orders and map kinds of the cheapest plan: every combination of nested or row-major
/// orders at the strided steps (at most 2^8; beyond, every strided step nests), each map direct
/// or (natural output order only) hybrid. The first map's im2col cost does not depend on the
/// orders; `first_direct` says whether it runs direct from im2col (else it reads the image in
/// natural order).
pub(crate) fn choose_orders(
    low: &Lowered,
    inputs: &[Shape],
    period: usize,
    first_im2col: bool,
) -> (Orders, Vec<MapKind>) {
    let lin = linear_ops(low);
    let nestable: Vec<usize> = (0..lin.len())
        .filter(|&i| {
            let a = affine(low, lin[i]);
            match (a.out_shape, lin.get(i + 1)) {
                (Shape::Chw([_, h, w]), Some(&next)) => {
                    stride_of(h, w, affine(low, next)).is_some()
                }
                _ => false,
            }
        })
        .collect();
    let combos: Vec<Vec<bool>> = if nestable.len() > 8 {
        vec![vec![true; lin.len()]]
    } else {
        (0..1usize << nestable.len())
            .map(|bits| {
                let mut nest = vec![false; lin.len()];
                for (b, &i) in nestable.iter().enumerate() {
                    nest[i] = bits >> b & 1 == 1;
                }
                nest
            })
            .collect()
    };
    let mut best: Option<(f64, Orders, Vec<MapKind>)> = None;
    for nest in combos {
        let orders = orders_for(low, &lin, &nest);
        let mut total = 0.0;
        let mut kinds = vec![MapKind::Hybrid; low.ops.len()];
        let mut in_order: Option<&[u32]> = None;
        for (i, &k) in lin.iter().enumerate() {
            let a = affine(low, k);
            let out_order = orders[k].as_deref();
            if i == 0 && first_im2col {
                kinds[k] = MapKind::Direct;
            } else {
                let natural =
                    out_order.is_none_or(|o| o.iter().enumerate().all(|(p, &q)| p as u32 == q));
                let direct = match a.out_shape {
                    Shape::Chw(_) => Some(direct_cost(a, inputs[k], in_order, out_order, period)),
                    Shape::Flat(_) => None,
                };
                let hybrid = natural.then(|| hybrid_cost(a, inputs[k], in_order, period));
                let (cost, kind) = match (direct, hybrid) {
                    (Some(d), Some(h)) if h < d => (h, MapKind::Hybrid),
                    (Some(d), _) => (d, MapKind::Direct),
                    (None, Some(h)) => (h, MapKind::Hybrid),
                    (None, None) => (f64::INFINITY, MapKind::Direct),
                };
                total += cost;
                kinds[k] = kind;
            }
            // a hybrid map's output comes out in natural order
            in_order = match kinds[k] {
                MapKind::Direct => out_order,
                MapKind::Hybrid => None,
            };
        }
        if best.as_ref().is_none_or(|(c, _, _)| total < *c) {
            best = Some((total, orders, kinds));
        }
    }
    let (_, orders, kinds) = best.expect("at least one combination");
    // orders of maps that run hybrid are natural
    let orders = orders
        .into_iter()
        .zip(&kinds)
        .map(|(o, k)| if *k == MapKind::Hybrid { None } else { o })
        .collect();
    (orders, kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn space_to_depth_order_nests_on_the_next_maps_order() {
        // a 4×4 grid read by a stride-2 map onto 2×2 (row-major)
        let order = nested(4, 4, (2, 2, 2, 2), &row_major(2, 2));
        // position (y, x) → block (y%2, x%2) · 4 + (y/2)·2 + x/2
        assert_eq!(order[0], 0); // (0,0): block 0, pos 0
        assert_eq!(order[1], 4); // (0,1): block 1, pos 0
        assert_eq!(order[2], 1); // (0,2): block 0, pos 1
        assert_eq!(order[5], 12); // (1,1): block 3, pos 0
        assert_eq!(order[15], 15); // (3,3): block 3, pos 3
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, row_major(4, 4));
        assert_eq!(slot_of(Shape::Chw([2, 4, 4]), Some(&order), 16 + 1), 16 + 4);
        assert_eq!(slot_of(Shape::Flat(9), None, 7), 7);
    }
}
