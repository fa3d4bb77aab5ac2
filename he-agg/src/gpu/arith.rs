//! Slot-wise arithmetic on the device, as the CPU evaluator does it: sums, plaintext and scalar
//! terms, and the multiply-accumulates of many products into one ciphertext (a diagonal
//! product's giant step). Each is one launch.

use super::engine::{DevCiphertext, Engine, GpuError};
use super::exec::{Exec, LimbOp, MacJob, MapJob};
use crate::ckks::{Plaintext, reduce_f64};
use crate::ring::ShoupConst;

/// A plaintext on the device, NTT domain, `level` limbs.
pub struct DevPlaintext<B> {
    pub buf: B,
    pub level: usize,
    pub scale: f64,
}

/// One limb job per (part, limb) of a `[parts][level]` result reading `[parts][src_level]`.
fn part_jobs(parts: usize, level: usize, src_level: usize) -> Vec<MapJob> {
    (0..parts)
        .flat_map(|p| {
            (0..level).map(move |i| MapJob {
                dst: (p * level + i) as u32,
                src: (p * src_level + i) as u32,
                modulus: i as u32,
                konst: i as u32,
            })
        })
        .collect()
}

fn mac_job(dst: usize, modulus: usize, prods: &[(usize, usize)]) -> MacJob {
    let (a1, b1) = prods.get(1).copied().unwrap_or(prods[0]);
    MacJob {
        dst: dst as u32,
        modulus: modulus as u32,
        products: prods.len() as u32,
        a: [prods[0].0 as u32, a1 as u32],
        b: [prods[0].1 as u32, b1 as u32],
    }
}

impl<E: Exec> Engine<E> {
    /// A plaintext to the device (its NTT taken on the host first when it is in coefficients).
    pub fn upload_plain(&self, pt: &Plaintext) -> Result<DevPlaintext<E::Buf>, GpuError> {
        let level = pt.level();
        if level == 0 || level > self.rlwe().max_level() || pt.poly.n() != self.rlwe().n() {
            return Err(GpuError::Level(level, "held"));
        }
        let buf = if pt.is_ntt {
            self.exec().upload(pt.poly.data())?
        } else {
            let mut p = pt.poly.clone();
            self.rlwe().ring().ntt(&mut p, self.rlwe().q_basis(level));
            self.exec().upload(p.data())?
        };
        Ok(DevPlaintext {
            buf,
            level,
            scale: pt.scale,
        })
    }

    /// A copy of `ct`.
    pub fn copy(&self, ct: &DevCiphertext<E::Buf>) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let jobs = part_jobs(ct.parts, ct.level, ct.level);
        let mut out = self.exec().scratch(ct.parts * ct.level)?;
        self.exec()
            .map(LimbOp::Copy, &mut out, &ct.buf, &jobs, &[])?;
        Ok(DevCiphertext { buf: out, ..*ct })
    }

    /// a += b, b at a level at least a's and of no higher degree (as
    /// [`crate::ckks::Evaluator::add_assign`]; the caller has matched the scales).
    pub fn add_assign(
        &self,
        a: &mut DevCiphertext<E::Buf>,
        b: &DevCiphertext<E::Buf>,
    ) -> Result<(), GpuError> {
        if b.level < a.level {
            return Err(GpuError::LevelMismatch(a.level, b.level));
        }
        if b.parts > a.parts {
            return Err(GpuError::Degree(b.degree()));
        }
        let jobs = part_jobs(b.parts, a.level, b.level);
        self.exec()
            .map(LimbOp::Add, &mut a.buf, &b.buf, &jobs, &[])?;
        Ok(())
    }

    /// c0 += pt (pt at a level at least a's).
    pub fn add_plain_assign(
        &self,
        a: &mut DevCiphertext<E::Buf>,
        pt: &DevPlaintext<E::Buf>,
    ) -> Result<(), GpuError> {
        if pt.level < a.level {
            return Err(GpuError::LevelMismatch(a.level, pt.level));
        }
        let jobs = part_jobs(1, a.level, pt.level);
        self.exec()
            .map(LimbOp::Add, &mut a.buf, &pt.buf, &jobs, &[])?;
        Ok(())
    }

    /// a − b for degree-1 ciphertexts, at the lower of their levels (as
    /// [`crate::ckks::Evaluator::sub`]; the caller has matched the scales): b's words copied,
    /// then (a − b)·1 in one pass.
    pub fn sub(
        &self,
        a: &DevCiphertext<E::Buf>,
        b: &DevCiphertext<E::Buf>,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        a.check_linear()?;
        b.check_linear()?;
        let level = a.level.min(b.level);
        let mut out = self.drop_to(b, level)?;
        let ones: Vec<ShoupConst> = (0..level)
            .map(|i| self.rlwe().q_modulus(i).shoup(1))
            .collect();
        let jobs = part_jobs(2, level, a.level);
        self.exec()
            .map(LimbOp::RevSubMulConst, &mut out.buf, &a.buf, &jobs, &ones)?;
        out.scale = a.scale;
        Ok(out)
    }

    /// `ct` at `level` (at most its own), its upper limbs dropped (as
    /// [`crate::ckks::Evaluator::drop_levels`]).
    pub fn drop_to(
        &self,
        ct: &DevCiphertext<E::Buf>,
        level: usize,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        if level == 0 || level > ct.level {
            return Err(GpuError::Level(ct.level, "dropped to a level above it"));
        }
        let jobs = part_jobs(ct.parts, level, ct.level);
        let mut out = self.exec().scratch(ct.parts * level)?;
        self.exec()
            .map(LimbOp::Copy, &mut out, &ct.buf, &jobs, &[])?;
        Ok(DevCiphertext {
            buf: out,
            level,
            ..*ct
        })
    }

    /// a + c in every slot for a real c at a's scale (the constant round(c·scale) added to c0 in
    /// every limb, as the inference kernels do on the CPU).
    pub fn add_real_const(&self, a: &mut DevCiphertext<E::Buf>, c: f64) -> Result<(), GpuError> {
        let v = (c * a.scale).round();
        if v.is_nan() || v.abs() >= 9.2e18 {
            return Err(GpuError::Constant(c));
        }
        let consts: Vec<ShoupConst> = (0..a.level)
            .map(|i| ShoupConst {
                w: self.rlwe().q_modulus(i).reduce_i64(v as i64),
                w_shoup: 0,
            })
            .collect();
        let jobs = part_jobs(1, a.level, a.level);
        self.exec()
            .map_within(LimbOp::AddConst, &mut a.buf, &jobs, &consts)?;
        Ok(())
    }

    /// a · c for a real constant encoded at `const_scale` (as
    /// [`crate::ckks::Evaluator::mul_const`]); the scales multiply.
    pub fn mul_const(
        &self,
        mut a: DevCiphertext<E::Buf>,
        c: f64,
        const_scale: f64,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let v = (c * const_scale).round();
        if !(v.is_finite() && const_scale.is_finite() && const_scale >= 1.0) {
            return Err(GpuError::Constant(c));
        }
        let consts: Vec<ShoupConst> = (0..a.level)
            .map(|i| {
                let m = self.rlwe().q_modulus(i);
                m.shoup(reduce_f64(m, v))
            })
            .collect();
        let jobs = part_jobs(a.parts, a.level, a.level);
        self.exec()
            .map_within(LimbOp::MulConst, &mut a.buf, &jobs, &consts)?;
        a.scale *= const_scale;
        Ok(a)
    }

    /// A fresh ciphertext of `parts` parts from one multiply-accumulate launch.
    fn mac_into(
        &self,
        pairs: Vec<(&E::Buf, &E::Buf)>,
        jobs: &[MacJob],
        parts: usize,
        level: usize,
        scale: f64,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let mut out = self.exec().scratch(parts * level)?;
        self.exec().mac(&mut out, &pairs, jobs, false)?;
        Ok(DevCiphertext {
            buf: out,
            level,
            scale,
            parts,
        })
    }

    /// Σ_t xs[t] ⊙ ws[t] for degree-1 ciphertexts at one level and plaintexts at one level at
    /// least theirs: a degree-1 ciphertext at scale `xs.scale · ws.scale`, not rescaled.
    pub fn dot_plain(
        &self,
        xs: &[&DevCiphertext<E::Buf>],
        ws: &[&DevPlaintext<E::Buf>],
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let (x0, w0) = match (xs.first(), ws.first()) {
            (Some(x), Some(w)) if xs.len() == ws.len() => (x, w),
            _ => return Err(GpuError::Level(0, "summed over no products")),
        };
        let level = x0.level;
        for x in xs {
            x.check_linear()?;
            if x.level != level {
                return Err(GpuError::LevelMismatch(level, x.level));
            }
        }
        if let Some(w) = ws.iter().find(|w| w.level != w0.level || w.level < level) {
            return Err(GpuError::LevelMismatch(level, w.level));
        }
        let jobs: Vec<MacJob> = (0..2)
            .flat_map(|p| (0..level).map(move |i| mac_job(p * level + i, i, &[(p * level + i, i)])))
            .collect();
        let pairs = xs.iter().zip(ws).map(|(x, w)| (&x.buf, &w.buf)).collect();
        self.mac_into(pairs, &jobs, 2, level, x0.scale * w0.scale)
    }

    /// Σ_t xs[t] ⊗ ws[t] for degree-1 ciphertexts (each list at one level, the weights' at
    /// least the inputs'): degree 2, not rescaled or relinearized.
    pub fn dot_cipher(
        &self,
        xs: &[&DevCiphertext<E::Buf>],
        ws: &[&DevCiphertext<E::Buf>],
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        let (x0, w0) = match (xs.first(), ws.first()) {
            (Some(x), Some(w)) if xs.len() == ws.len() => (x, w),
            _ => return Err(GpuError::Level(0, "summed over no products")),
        };
        let (level, wl) = (x0.level, w0.level);
        for (x, w) in xs.iter().zip(ws) {
            x.check_linear()?;
            w.check_linear()?;
            if x.level != level {
                return Err(GpuError::LevelMismatch(level, x.level));
            }
            if w.level != wl || wl < level {
                return Err(GpuError::LevelMismatch(level, w.level));
            }
        }
        let jobs: Vec<MacJob> = (0..level)
            .flat_map(|i| {
                let (x0, x1, w0, w1) = (i, level + i, i, wl + i);
                [
                    mac_job(i, i, &[(x0, w0)]),
                    mac_job(level + i, i, &[(x0, w1), (x1, w0)]),
                    mac_job(2 * level + i, i, &[(x1, w1)]),
                ]
            })
            .collect();
        let pairs = xs.iter().zip(ws).map(|(x, w)| (&x.buf, &w.buf)).collect();
        self.mac_into(pairs, &jobs, 3, level, x0.scale * w0.scale)
    }
}

/// One group of a batched map on the device: its integer weights `[level][rows][cols]`.
pub struct DevGroupWeights<B> {
    buf: B,
    rows: usize,
    cols: Vec<u32>,
    level: usize,
}

impl<E: Exec> Engine<E> {
    /// Uploads a group's weights, one vector of `rows × cols` words per limb.
    pub fn upload_group(
        &self,
        rows: usize,
        cols: &[u32],
        weights: &[Vec<u64>],
    ) -> Result<DevGroupWeights<E::Buf>, GpuError> {
        let level = weights.len();
        if level == 0
            || level > self.rlwe().max_level()
            || weights.iter().any(|w| w.len() != rows * cols.len())
        {
            return Err(GpuError::Level(level, "a group's weights"));
        }
        let words: Vec<u64> = weights.iter().flatten().copied().collect();
        Ok(DevGroupWeights {
            buf: self.exec().upload(&words)?,
            rows,
            cols: cols.to_vec(),
            level,
        })
    }

    /// outs[r] (+)= Σ_e w[r][e]·xs[cols[e]] over every part and limb (as the CPU's batched
    /// group product): `outs` are the group's rows, in order, at the inputs' level and degree.
    pub fn group_product(
        &self,
        outs: &mut [&mut DevCiphertext<E::Buf>],
        xs: &[&DevCiphertext<E::Buf>],
        g: &DevGroupWeights<E::Buf>,
        accumulate: bool,
    ) -> Result<(), GpuError> {
        let Some(x0) = xs.first() else {
            return Err(GpuError::Level(0, "a map over no inputs"));
        };
        let (level, parts) = (x0.level, x0.parts);
        if let Some(x) = xs.iter().find(|x| x.level != level || x.parts != parts) {
            return Err(GpuError::LevelMismatch(level, x.level));
        }
        if let Some(o) = outs.iter().find(|o| o.level != level || o.parts != parts) {
            return Err(GpuError::LevelMismatch(level, o.level));
        }
        if outs.len() != g.rows || g.level < level || g.cols.iter().any(|&c| c as usize >= xs.len())
        {
            return Err(GpuError::Level(level, "mapped by a group of another shape"));
        }
        let mut bufs: Vec<&mut E::Buf> = outs.iter_mut().map(|o| &mut o.buf).collect();
        let ins: Vec<&E::Buf> = xs.iter().map(|x| &x.buf).collect();
        let shape = super::exec::GroupShape {
            rows: g.rows,
            parts,
            level,
            accumulate,
        };
        // the weights are laid out [limb][row][col]: a lower level reads a prefix
        self.exec()
            .group_product(&mut bufs, &ins, &g.cols, &g.buf, shape)?;
        Ok(())
    }

    /// A zero ciphertext (`parts` parts at `level`).
    pub fn zero_ct(
        &self,
        level: usize,
        parts: usize,
        scale: f64,
    ) -> Result<DevCiphertext<E::Buf>, GpuError> {
        Ok(DevCiphertext {
            buf: self.exec().zeros(parts * level)?,
            level,
            scale,
            parts,
        })
    }
}
