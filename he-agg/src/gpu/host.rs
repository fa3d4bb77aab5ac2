//! The primitives of [`Exec`] on the CPU, one job after another, with exactly the arithmetic the
//! kernels use: the reference that the GPU is checked against, and that is itself checked
//! against the CPU evaluator in every test run.

use std::sync::Arc;

use zeroize::{Zeroize, Zeroizing};

use super::exec::{
    DotShape, Exec, ExtendJob, GroupShape, LimbJob, LimbOp, MacJob, MapJob, SampleDist,
};
use super::tables::NttTables;
use crate::aggregate::CudaError;
use crate::ring::{Modulus, Seed, ShoupConst, expand};

/// The reference executor.
#[derive(Debug, Clone)]
pub struct HostExec {
    tables: Arc<NttTables>,
}

impl HostExec {
    pub fn new(tables: Arc<NttTables>) -> Self {
        Self { tables }
    }

    fn n(&self) -> usize {
        self.tables.n()
    }

    fn m(&self, idx: u32) -> &Modulus {
        self.tables.modulus(idx as usize)
    }

    /// One job of a [`LimbOp`]: limb `job.dst` of `dst` from the source limb `src`.
    fn map_limb(
        &self,
        op: LimbOp,
        dst: &mut [u64],
        src: &[u64],
        job: &MapJob,
        consts: &[ShoupConst],
    ) {
        let n = self.n();
        let m = self.m(job.modulus);
        let c = consts.get(job.konst as usize).copied().unwrap_or_default();
        for (d, &a) in dst[job.dst as usize * n..][..n].iter_mut().zip(src) {
            *d = apply(op, m, *d, a, c);
        }
    }
}

/// One word of a [`LimbOp`].
fn apply(op: LimbOp, m: &Modulus, d: u64, a: u64, c: ShoupConst) -> u64 {
    match op {
        LimbOp::Copy => a,
        LimbOp::MulConst => m.mul_shoup(a, c),
        LimbOp::RevSubMulConst => m.mul_shoup(m.sub(a, d), c),
        LimbOp::Add => m.add(d, a),
        LimbOp::AddConst => m.add(a, c.w),
        LimbOp::LiftSub => m.sub(m.reduce(a), c.w),
    }
}

/// Σ a_i·b_i mod m in 128 bits, reduced every 15 products.
fn lazy_dot(m: &Modulus, terms: impl Iterator<Item = (u64, u64)>) -> u64 {
    let mut acc = 0u128;
    for (i, (a, b)) in terms.enumerate() {
        acc += a as u128 * b as u128;
        if i % 15 == 14 {
            acc = m.reduce_u128(acc) as u128;
        }
    }
    m.reduce_u128(acc)
}

impl Exec for HostExec {
    type Buf = Vec<u64>;

    fn zeros(&self, limbs: usize) -> Result<Vec<u64>, CudaError> {
        Ok(vec![0; limbs * self.n()])
    }

    fn upload(&self, words: &[u64]) -> Result<Vec<u64>, CudaError> {
        Ok(words.to_vec())
    }

    fn download(&self, buf: &Vec<u64>) -> Result<Vec<u64>, CudaError> {
        Ok(buf.clone())
    }

    fn ntt(&self, buf: &mut Vec<u64>, jobs: &[LimbJob]) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let limb = &mut buf[j.limb as usize * n..][..n];
            self.tables.forward(j.modulus as usize, limb);
        }
        Ok(())
    }

    fn intt(&self, buf: &mut Vec<u64>, jobs: &[LimbJob], normalize: bool) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let limb = &mut buf[j.limb as usize * n..][..n];
            self.tables.inverse(j.modulus as usize, limb, normalize);
        }
        Ok(())
    }

    fn map(
        &self,
        op: LimbOp,
        dst: &mut Vec<u64>,
        src: &Vec<u64>,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            self.map_limb(op, dst, &src[j.src as usize * n..][..n], j, consts);
        }
        Ok(())
    }

    fn map_within(
        &self,
        op: LimbOp,
        buf: &mut Vec<u64>,
        jobs: &[MapJob],
        consts: &[ShoupConst],
    ) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let src = buf[j.src as usize * n..][..n].to_vec();
            self.map_limb(op, buf, &src, j, consts);
        }
        Ok(())
    }

    fn extend(
        &self,
        dst: &mut Vec<u64>,
        src: &Vec<u64>,
        jobs: &[ExtendJob],
        rows: &[u64],
    ) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let m = self.m(j.modulus);
            let row = &rows[j.row as usize..][..j.count as usize];
            for k in 0..n {
                let terms = row
                    .iter()
                    .enumerate()
                    .map(|(i, &w)| (src[(j.first as usize + i) * n + k], w));
                dst[j.dst as usize * n + k] = lazy_dot(m, terms);
            }
        }
        Ok(())
    }

    fn dot(
        &self,
        out: &mut Vec<u64>,
        digits: &Vec<u64>,
        key: &Vec<u64>,
        qp: &[u32],
        s: DotShape,
    ) -> Result<(), CudaError> {
        let n = self.n();
        for c in 0..2 {
            for (pos, &idx) in qp.iter().enumerate() {
                let m = self.m(idx);
                for k in 0..n {
                    let terms = (0..s.digits).map(|j| {
                        (
                            digits[(j * s.width + pos) * n + k],
                            key[((j * 2 + c) * s.key_limbs + idx as usize) * n + k],
                        )
                    });
                    out[(c * s.width + pos) * n + k] = lazy_dot(m, terms);
                }
            }
        }
        Ok(())
    }

    fn tensor(
        &self,
        out: &mut Vec<u64>,
        a: &Vec<u64>,
        b: &Vec<u64>,
        level: usize,
    ) -> Result<(), CudaError> {
        let n = self.n();
        for i in 0..level {
            let m = self.m(i as u32);
            let (a0, a1) = (&a[i * n..][..n], &a[(level + i) * n..][..n]);
            let (b0, b1) = (&b[i * n..][..n], &b[(level + i) * n..][..n]);
            for k in 0..n {
                out[i * n + k] = lazy_dot(m, [(a0[k], b0[k])].into_iter());
                out[(level + i) * n + k] =
                    lazy_dot(m, [(a0[k], b1[k]), (a1[k], b0[k])].into_iter());
                out[(2 * level + i) * n + k] = lazy_dot(m, [(a1[k], b1[k])].into_iter());
            }
        }
        Ok(())
    }

    fn mac(
        &self,
        out: &mut Vec<u64>,
        pairs: &[(&Vec<u64>, &Vec<u64>)],
        jobs: &[MacJob],
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let m = self.m(j.modulus);
            let prods = j.products as usize;
            for k in 0..n {
                let o = j.dst as usize * n + k;
                let prior = if accumulate { out[o] } else { 0 };
                let terms = [(prior, 1)]
                    .into_iter()
                    .chain(pairs.iter().flat_map(|(a, b)| {
                        (0..prods)
                            .map(move |p| (a[j.a[p] as usize * n + k], b[j.b[p] as usize * n + k]))
                    }));
                out[o] = lazy_dot(m, terms);
            }
        }
        Ok(())
    }

    fn group_product(
        &self,
        outs: &mut [&mut Vec<u64>],
        xs: &[&Vec<u64>],
        cols: &[u32],
        weights: &Vec<u64>,
        s: GroupShape,
    ) -> Result<(), CudaError> {
        let (n, c) = (self.n(), cols.len());
        for (r, out) in outs.iter_mut().enumerate().take(s.rows) {
            for p in 0..s.parts {
                for i in 0..s.level {
                    let m = self.m(i as u32);
                    let w = &weights[(i * s.rows + r) * c..][..c];
                    let limb = (p * s.level + i) * n;
                    for k in 0..n {
                        let prior = if s.accumulate { out[limb + k] } else { 0 };
                        let terms = w
                            .iter()
                            .zip(cols)
                            .map(|(&w, &col)| (w, xs[col as usize][limb + k]))
                            .chain([(prior, 1)]);
                        out[limb + k] = lazy_dot(m, terms);
                    }
                }
            }
        }
        Ok(())
    }

    fn permute(
        &self,
        dst: &mut Vec<u64>,
        src: &Vec<u64>,
        jobs: &[MapJob],
        map: &[u32],
        add: bool,
    ) -> Result<(), CudaError> {
        let n = self.n();
        for j in jobs {
            let m = self.m(j.modulus);
            let s = &src[j.src as usize * n..][..n];
            for (d, &i) in dst[j.dst as usize * n..][..n].iter_mut().zip(map) {
                *d = if add {
                    m.add(*d, s[i as usize])
                } else {
                    s[i as usize]
                };
            }
        }
        Ok(())
    }

    fn sample(
        &self,
        dst: &mut Vec<u64>,
        first: usize,
        seeds: &[Seed],
        dist: SampleDist,
        moduli: &[u32],
    ) -> Result<(), CudaError> {
        let n = self.n();
        for (s, seed) in seeds.iter().enumerate() {
            let coeffs: Zeroizing<Vec<i128>> = Zeroizing::new(match dist {
                SampleDist::Ternary => widen(expand::ternary(seed, n)),
                SampleDist::Gaussian => widen(expand::gaussian(seed, n)),
                SampleDist::Flooding { sigma } => expand::flooding(seed, n, sigma),
            });
            for (i, &mi) in moduli.iter().enumerate() {
                let m = self.m(mi);
                let limb = first + s * moduli.len() + i;
                for (d, &c) in dst[limb * n..][..n].iter_mut().zip(coeffs.iter()) {
                    *d = m.reduce_i128(c);
                }
            }
        }
        Ok(())
    }

    fn wipe(&self, buf: &mut Vec<u64>) -> Result<(), CudaError> {
        buf.as_mut_slice().zeroize();
        Ok(())
    }
}

/// Small samples as the 128-bit integers flooding uses (the i64 vector wiped).
fn widen(mut v: Vec<i64>) -> Vec<i128> {
    let w = v.iter().map(|&x| x as i128).collect();
    v.zeroize();
    w
}
