//! Public-key switching (PCKS) on the device, for a whole model at once: its ciphertexts stacked
//! in one buffer, so a party's share is a few launches whatever the model's size. The share's
//! randomness (u, the flooding e0, e1) is expanded on the device from seeds drawn exactly as
//! [`PublicKeySwitch::share`] draws them, so the device's shares equal the CPU's word for word;
//! the secret share, the seeds and u are wiped from device memory when the share is made.

use zeroize::Zeroizing;

use super::engine::{Engine, GpuError};
use super::exec::{Exec, LimbJob, LimbOp, MacJob, MapJob, SampleDist};
use crate::ckks::Ciphertext;
use crate::multiparty::keyswitch::mask_seeds;
use crate::multiparty::{PublicKeySwitch, PublicKeySwitchShare};
use crate::ring::{Poly, Prng, Seed};
use crate::rlwe::{PublicKey, SecretKey, select_limbs};

/// Degree-1 ciphertexts at one level and scale on the device: c0 and c1 each `[ct][limb]`.
pub struct DevCiphertexts<B> {
    c0: B,
    c1: B,
    level: usize,
    count: usize,
    scale: f64,
}

impl<B> DevCiphertexts<B> {
    pub fn len(&self) -> usize {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn level(&self) -> usize {
        self.level
    }
}

/// One party's shares for every ciphertext of a [`DevCiphertexts`] (or their sum), `[ct][limb]`.
pub struct DevSwitchShare<B> {
    h0: B,
    h1: B,
    level: usize,
    count: usize,
}

/// A public-key switch to one target key at one level: the target key resident.
pub struct DevPublicKeySwitch<B> {
    switch: PublicKeySwitch,
    target: [u8; 32],
    b: B,
    a: B,
    level: usize,
}

/// Limb `ct·level + i` of a stack, modulo ring modulus i (Q's primes come first in the ring).
fn stack_jobs(count: usize, level: usize) -> Vec<LimbJob> {
    (0..count * level)
        .map(|k| LimbJob {
            limb: k as u32,
            modulus: (k % level) as u32,
        })
        .collect()
}

fn stack_map_jobs(count: usize, level: usize) -> Vec<MapJob> {
    stack_jobs(count, level)
        .into_iter()
        .map(|j| MapJob {
            dst: j.limb,
            src: j.limb,
            modulus: j.modulus,
            konst: 0,
        })
        .collect()
}

/// Every limb of a stack times limb i of a one-polynomial operand (a key, or the secret).
fn key_product_jobs(count: usize, level: usize) -> Vec<MacJob> {
    stack_jobs(count, level)
        .into_iter()
        .map(|j| MacJob {
            dst: j.limb,
            modulus: j.modulus,
            products: 1,
            a: [j.limb; 2],
            b: [j.modulus; 2],
        })
        .collect()
}

impl<E: Exec> Engine<E> {
    fn check_level(&self, level: usize) -> Result<(), GpuError> {
        if level == 0 || level > self.rlwe().max_level() {
            return Err(GpuError::Level(level, "held"));
        }
        Ok(())
    }

    /// Polynomials of `level` limbs stacked into one buffer.
    fn upload_stack<'p>(
        &self,
        polys: impl Iterator<Item = &'p Poly>,
        level: usize,
    ) -> Result<E::Buf, GpuError> {
        let n = self.rlwe().n();
        let mut words = Vec::new();
        for p in polys {
            if p.n() != n || p.limbs() != level {
                return Err(GpuError::Level(p.limbs(), "stacked with other levels"));
            }
            words.extend_from_slice(p.data());
        }
        Ok(self.exec().upload(&words)?)
    }

    fn download_stack(&self, buf: &E::Buf, level: usize) -> Result<Vec<Poly>, GpuError> {
        let n = self.rlwe().n();
        let words = self.exec().download(buf)?;
        Ok(words
            .chunks(level * n)
            .map(|w| Poly::from_data(n, w.to_vec()))
            .collect())
    }

    /// Degree-1 ciphertexts of one level and scale to the device, in one buffer per part.
    pub fn upload_cts(&self, cts: &[Ciphertext]) -> Result<DevCiphertexts<E::Buf>, GpuError> {
        let first = cts.first().ok_or(GpuError::Empty)?;
        let (level, scale) = (first.level(), first.scale);
        self.check_level(level)?;
        for ct in cts {
            if ct.degree() != 1 {
                return Err(GpuError::Degree(ct.degree()));
            }
            if ct.level() != level {
                return Err(GpuError::LevelMismatch(level, ct.level()));
            }
            if ct.scale.to_bits() != scale.to_bits() {
                return Err(GpuError::Scale(scale, ct.scale));
            }
        }
        Ok(DevCiphertexts {
            c0: self.upload_stack(cts.iter().map(|c| &c.parts[0]), level)?,
            c1: self.upload_stack(cts.iter().map(|c| &c.parts[1]), level)?,
            level,
            count: cts.len(),
            scale,
        })
    }

    pub fn download_cts(&self, cts: &DevCiphertexts<E::Buf>) -> Result<Vec<Ciphertext>, GpuError> {
        let c0 = self.download_stack(&cts.c0, cts.level)?;
        let c1 = self.download_stack(&cts.c1, cts.level)?;
        Ok(c0
            .into_iter()
            .zip(c1)
            .map(|(a, b)| Ciphertext {
                parts: vec![a, b],
                scale: cts.scale,
            })
            .collect())
    }

    /// `switch` to `target` at `level`, the target key uploaded once.
    pub fn public_switch(
        &self,
        switch: &PublicKeySwitch,
        target: &PublicKey,
        level: usize,
    ) -> Result<DevPublicKeySwitch<E::Buf>, GpuError> {
        self.check_level(level)?;
        if switch.ctx().rlwe().fingerprint() != self.rlwe().fingerprint()
            || target.fingerprint() != switch.ctx().fingerprint()
        {
            return Err(GpuError::ForeignKey);
        }
        let n = self.rlwe().n();
        Ok(DevPublicKeySwitch {
            switch: switch.clone(),
            target: *target.fingerprint(),
            b: self.exec().upload(&target.b().data()[..level * n])?,
            a: self.exec().upload(&target.a().data()[..level * n])?,
            level,
        })
    }

    /// This party's shares for switching every ciphertext of `cts`, equal to
    /// [`PublicKeySwitch::share`] of each in turn with the same generator.
    pub fn switch_share(
        &self,
        pcks: &DevPublicKeySwitch<E::Buf>,
        sk: &SecretKey,
        cts: &DevCiphertexts<E::Buf>,
        prng: &mut Prng,
    ) -> Result<DevSwitchShare<E::Buf>, GpuError> {
        let (count, level) = (cts.count, cts.level);
        if level != pcks.level {
            return Err(GpuError::LevelMismatch(pcks.level, level));
        }
        pcks.switch
            .check_share(sk, &pcks.target, level, cts.scale)?;
        let rl = self.rlwe();
        let basis = rl.q_basis(level);
        let moduli: Vec<u32> = basis.iter().map(|&i| i as u32).collect();
        let seeds: Vec<[Zeroizing<Seed>; 3]> = (0..count).map(|_| mask_seeds(prng)).collect();
        let pick = |k: usize| Zeroizing::new(seeds.iter().map(|s| *s[k]).collect::<Vec<Seed>>());
        let sigma = pcks.switch.flooding().sigma();
        let exec = self.exec();
        let limbs = count * level;
        let mut u = exec.scratch(limbs)?;
        let mut h0 = exec.scratch(limbs)?;
        let mut h1 = exec.scratch(limbs)?;
        exec.sample(&mut u, 0, &pick(0), SampleDist::Ternary, &moduli)?;
        exec.sample(
            &mut h0,
            0,
            &pick(1),
            SampleDist::Flooding { sigma },
            &moduli,
        )?;
        exec.sample(&mut h1, 0, &pick(2), SampleDist::Gaussian, &moduli)?;
        let jobs = stack_jobs(count, level);
        for buf in [&mut u, &mut h0, &mut h1] {
            exec.ntt(buf, &jobs)?;
        }
        let s = Zeroizing::new(select_limbs(sk.poly(), rl, basis));
        let mut s_dev = exec.upload(s.data())?;
        let products = key_product_jobs(count, level);
        // h0 = e0 + u·b' + s_i·c1, h1 = e1 + u·a'
        exec.mac(
            &mut h0,
            &[(&u, &pcks.b), (&cts.c1, &s_dev)],
            &products,
            true,
        )?;
        exec.mac(&mut h1, &[(&u, &pcks.a)], &products, true)?;
        exec.wipe(&mut u)?;
        exec.wipe(&mut s_dev)?;
        Ok(DevSwitchShare {
            h0,
            h1,
            level,
            count,
        })
    }

    /// acc += share (the coordinator's sum of the parties' shares).
    pub fn switch_aggregate(
        &self,
        acc: &mut DevSwitchShare<E::Buf>,
        share: &DevSwitchShare<E::Buf>,
    ) -> Result<(), GpuError> {
        if (acc.level, acc.count) != (share.level, share.count) {
            return Err(GpuError::LevelMismatch(acc.level, share.level));
        }
        let jobs = stack_map_jobs(acc.count, acc.level);
        self.exec()
            .map(LimbOp::Add, &mut acc.h0, &share.h0, &jobs, &[])?;
        self.exec()
            .map(LimbOp::Add, &mut acc.h1, &share.h1, &jobs, &[])?;
        Ok(())
    }

    /// The ciphertexts under the target key: (c0 + Σ h0, Σ h1).
    pub fn switch_finalize(
        &self,
        cts: &DevCiphertexts<E::Buf>,
        aggregate: DevSwitchShare<E::Buf>,
    ) -> Result<DevCiphertexts<E::Buf>, GpuError> {
        if (aggregate.level, aggregate.count) != (cts.level, cts.count) {
            return Err(GpuError::LevelMismatch(cts.level, aggregate.level));
        }
        let DevSwitchShare { mut h0, h1, .. } = aggregate;
        let jobs = stack_map_jobs(cts.count, cts.level);
        self.exec().map(LimbOp::Add, &mut h0, &cts.c0, &jobs, &[])?;
        Ok(DevCiphertexts {
            c0: h0,
            c1: h1,
            level: cts.level,
            count: cts.count,
            scale: cts.scale,
        })
    }

    /// The shares as the wire carries them, one per ciphertext.
    pub fn download_shares(
        &self,
        share: &DevSwitchShare<E::Buf>,
    ) -> Result<Vec<PublicKeySwitchShare>, GpuError> {
        let h0 = self.download_stack(&share.h0, share.level)?;
        let h1 = self.download_stack(&share.h1, share.level)?;
        Ok(h0
            .into_iter()
            .zip(h1)
            .map(|(h0, h1)| PublicKeySwitchShare { h0, h1 })
            .collect())
    }

    /// A party's shares received from the wire (validated there), to be summed on the device.
    pub fn upload_shares(
        &self,
        shares: &[PublicKeySwitchShare],
    ) -> Result<DevSwitchShare<E::Buf>, GpuError> {
        let level = shares.first().ok_or(GpuError::Empty)?.level();
        self.check_level(level)?;
        Ok(DevSwitchShare {
            h0: self.upload_stack(shares.iter().map(|s| &s.h0), level)?,
            h1: self.upload_stack(shares.iter().map(|s| &s.h1), level)?,
            level,
            count: shares.len(),
        })
    }
}
