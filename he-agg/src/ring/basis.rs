//! Changes of RNS basis: fast basis extension (Bajard et al. / HPS, without correction) and
//! rounded division by the last modulus of a chain (CKKS rescaling).

use super::Ring;
use super::limbwise;
use super::modulus::{Modulus, ShoupConst};
use super::par::{for_each_limb, for_each_limb_heavy};
use super::poly::Poly;

/// Extends residues modulo a source basis B = ∏ b_i to other moduli:
/// x_t = Σ_i [x_i · (B/b_i)^{-1}]_{b_i} · (B/b_i) mod t, which equals x + u·B with 0 ≤ u < |B|.
/// That small multiple of B is harmless where it is used (key-switching decomposition, division
/// by P), as in every full-RNS CKKS.
#[derive(Debug, Clone)]
pub struct BasisExtender {
    source: Vec<usize>,
    /// [(B/b_i)^{-1}]_{b_i} per source modulus, and the same times N^{-1} (for input that comes
    /// straight from an unnormalised inverse NTT).
    inv_punctured: [Vec<ShoupConst>; 2],
    /// [B/b_i]_t for every ring modulus t (row t, column i).
    punctured_mod: Vec<Vec<u64>>,
    /// The same prepared for Shoup's multiplication by t.
    punctured_shoup: Vec<Vec<ShoupConst>>,
}

impl BasisExtender {
    pub fn new(ring: &Ring, source: &[usize]) -> Self {
        let moduli = ring.moduli();
        let inv: Vec<u64> = source
            .iter()
            .map(|&i| {
                let m = &moduli[i];
                let prod = source
                    .iter()
                    .filter(|&&j| j != i)
                    .fold(1u64, |acc, &j| m.mul(acc, moduli[j].value() % m.value()));
                m.inv(prod).expect("distinct primes are coprime")
            })
            .collect();
        let inv_punctured = [
            source
                .iter()
                .zip(&inv)
                .map(|(&i, &v)| moduli[i].shoup(v))
                .collect(),
            source
                .iter()
                .zip(&inv)
                .map(|(&i, &v)| moduli[i].shoup(moduli[i].mul(v, ring.n_inv(i).w)))
                .collect(),
        ];
        let punctured_mod: Vec<Vec<u64>> = moduli
            .iter()
            .map(|t| {
                source
                    .iter()
                    .map(|&i| {
                        source
                            .iter()
                            .filter(|&&j| j != i)
                            .fold(1u64, |acc, &j| t.mul(acc, t.reduce(moduli[j].value())))
                    })
                    .collect()
            })
            .collect();
        let punctured_shoup = moduli
            .iter()
            .zip(&punctured_mod)
            .map(|(t, row)| row.iter().map(|&w| t.shoup(w)).collect())
            .collect();
        Self {
            source: source.to_vec(),
            inv_punctured,
            punctured_mod,
            punctured_shoup,
        }
    }

    pub fn source(&self) -> &[usize] {
        &self.source
    }

    /// Bits of the widest source modulus (the rows' words are below it).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn source_bits(&self, ring: &Ring) -> u32 {
        self.source
            .iter()
            .map(|&i| ring.modulus(i).bits())
            .max()
            .unwrap_or(0)
    }

    /// [(B/b_i)^{-1}]_{b_i} per source modulus (times N^{-1} with `unnormalized`): the
    /// constants of [`BasisExtender::prepare`], for kernels that repeat it on a device.
    pub(crate) fn prepare_consts(&self, unnormalized: bool) -> &[ShoupConst] {
        &self.inv_punctured[usize::from(unnormalized)]
    }

    /// [B/b_i]_t for ring modulus `target`: the row of [`BasisExtender::extend_limb`].
    pub(crate) fn extend_row(&self, target: usize) -> &[u64] {
        &self.punctured_mod[target]
    }

    /// Extends `input` (coefficient domain, one limb per source modulus) to the moduli `targets`.
    pub fn extend(&self, ring: &Ring, input: &Poly, targets: &[usize]) -> Poly {
        let limbs: Vec<&[u64]> = (0..input.limbs()).map(|i| input.limb(i)).collect();
        let y = self.prepare(ring, &limbs, false);
        let mut out = ring.zero(targets.len());
        for_each_limb_heavy(out.data_mut(), ring.n(), |ti, ol| {
            self.extend_limb(ring, &y, targets[ti], ol)
        });
        out
    }

    /// The first step, shared by all targets: y_i = [x_i · (B/b_i)^{-1}]_{b_i}. With
    /// `unnormalized`, the input is N times the value (an inverse NTT without its division by N)
    /// and the division happens here, in the same pass.
    pub fn prepare(&self, ring: &Ring, input: &[&[u64]], unnormalized: bool) -> Poly {
        let n = ring.n();
        debug_assert_eq!(input.len(), self.source.len());
        if self.source.len() == 1 && !unnormalized {
            // B/b_0 = 1: y is x itself
            return Poly::from_data(n, input[0].to_vec());
        }
        let consts = &self.inv_punctured[usize::from(unnormalized)];
        let mut y = Poly::zero(n, self.source.len());
        for_each_limb(y.data_mut(), n, |i, yl| {
            limbwise::mul_const(yl, input[i], consts[i], ring.modulus(self.source[i]))
        });
        y
    }

    /// The second step for one target modulus: out = Σ_i y_i·[B/b_i]_t mod t.
    pub fn extend_limb(&self, ring: &Ring, y: &Poly, target: usize, out: &mut [u64]) {
        let t: &Modulus = ring.modulus(target);
        let m = self.source.len();
        if m == 1 {
            // residues of a smaller prime are already reduced modulo a larger one
            if ring.modulus(self.source[0]).value() < t.value() {
                out.copy_from_slice(y.limb(0));
            } else {
                limbwise::reduce(out, y.limb(0), t);
            }
            return;
        }
        let rows: Vec<&[u64]> = (0..m).map(|i| y.limb(i)).collect();
        #[cfg(target_arch = "x86_64")]
        if super::float_sums::usable(t.bits().max(self.source_bits(ring))) {
            let row = &self.punctured_mod[target];
            return super::float_sums::sum_const_products(t, &rows, row, out);
        }
        if 2 * m as u128 * t.value() as u128 <= u64::MAX as u128 {
            self.extend_limb_shoup(t, &rows, target, out)
        } else {
            self.extend_limb_wide(t, &rows, target, out)
        }
    }

    /// [`BasisExtender::extend_limb`] for 2·m·t < 2^64: each term by Shoup's multiplication,
    /// below 2t, so their sum fits a word and is reduced once — no 128-bit sums and no 128-bit
    /// reduction per coefficient (a fifth of a key switch went to the latter at N = 2^14).
    pub(super) fn extend_limb_shoup(
        &self,
        t: &Modulus,
        rows: &[&[u64]],
        target: usize,
        out: &mut [u64],
    ) {
        let row = &self.punctured_shoup[target];
        if let ([r0, r1, r2], [w0, w1, w2]) = (rows, &row[..]) {
            // the usual three special primes, unrolled
            for (k, o) in out.iter_mut().enumerate() {
                let s = t.mul_shoup_lazy(r0[k], *w0)
                    + t.mul_shoup_lazy(r1[k], *w1)
                    + t.mul_shoup_lazy(r2[k], *w2);
                *o = t.reduce(s);
            }
            return;
        }
        for (k, o) in out.iter_mut().enumerate() {
            let s = row
                .iter()
                .zip(rows)
                .fold(0u64, |s, (&w, r)| s + t.mul_shoup_lazy(r[k], w));
            *o = t.reduce(s);
        }
    }

    /// [`BasisExtender::extend_limb`] by 128-bit sums, for any number of source moduli.
    pub(super) fn extend_limb_wide(
        &self,
        t: &Modulus,
        rows: &[&[u64]],
        target: usize,
        out: &mut [u64],
    ) {
        let row = &self.punctured_mod[target];
        // products are < 2^124, so 15 of them fit in a u128 before a reduction
        for (k, o) in out.iter_mut().enumerate() {
            let mut acc: u128 = 0;
            for (i, (&w, r)) in row.iter().zip(rows).enumerate() {
                acc += r[k] as u128 * w as u128;
                if i % 15 == 14 {
                    acc = t.reduce_u128(acc) as u128;
                }
            }
            *o = t.reduce_u128(acc);
        }
    }
}

/// Constants to divide by the last modulus of a level with rounding.
#[derive(Debug, Clone)]
pub struct RescaleConsts {
    /// [q_last^{-1}]_{q_i} for the remaining moduli.
    inv_last: Vec<ShoupConst>,
    /// [⌊q_last/2⌋]_{q_i} for the remaining moduli.
    half_last: Vec<u64>,
}

impl RescaleConsts {
    /// [q_last^{-1}]_{q_i} and [⌊q_last/2⌋]_{q_i} for the remaining moduli (for kernels that
    /// repeat [`Ring::div_round_by_last`] on a device).
    pub(crate) fn parts(&self) -> (&[ShoupConst], &[u64]) {
        (&self.inv_last, &self.half_last)
    }

    /// Constants for dividing a polynomial over `basis` by the modulus `basis.last()`.
    pub fn new(ring: &Ring, basis: &[usize]) -> Self {
        let (&last, rest) = basis
            .split_last()
            .expect("a basis to rescale has two moduli or more");
        let ql = ring.modulus(last).value();
        let inv_last = rest
            .iter()
            .map(|&i| {
                let m = ring.modulus(i);
                m.shoup(m.inv(m.reduce(ql)).expect("distinct primes"))
            })
            .collect();
        let half_last = rest
            .iter()
            .map(|&i| ring.modulus(i).reduce(ql / 2))
            .collect();
        Self {
            inv_last,
            half_last,
        }
    }
}

impl Ring {
    /// p ← round(p / q_last) over `basis` minus its last modulus; `p` is in the NTT domain and
    /// stays there. The last limb is dropped.
    pub fn div_round_by_last(&self, p: &mut Poly, basis: &[usize], consts: &RescaleConsts) {
        let l = basis.len();
        debug_assert_eq!(p.limbs(), l);
        let last_idx = basis[l - 1];
        let qlast = *self.modulus(last_idx);
        let mut last = p.limb(l - 1).to_vec();
        self.intt_limb(&mut last, last_idx);
        // adding ⌊q/2⌋ before the floor-division turns it into rounding
        limbwise::add_const_assign(&mut last, qlast.value() / 2, &qlast);
        p.truncate(l - 1);
        let n = self.n();
        for_each_limb_heavy(p.data_mut(), n, |i, limb| {
            let m = self.modulus(basis[i]);
            let mut tmp = vec![0u64; n];
            limbwise::reduce(&mut tmp, &last, m);
            // − ⌊q/2⌋ mod q_i, as + (q_i − ⌊q/2⌋ mod q_i)
            limbwise::add_const_assign(&mut tmp, m.neg(consts.half_last[i]), m);
            self.ntt_limb(&mut tmp, basis[i]);
            limbwise::sub_mul_const_assign(limb, &tmp, consts.inv_last[i], m);
        });
    }
}
