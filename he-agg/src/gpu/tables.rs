//! The twiddle and modulus tables every GPU kernel reads, built from a [`Ring`], and the
//! kernels' NTT written in Rust ([`forward`], [`inverse`]) so its arithmetic is tested against
//! tfhe-ntt on any machine.
//!
//! The transform is the negacyclic Cooley–Tukey / Gentleman–Sande pair of Longa–Naehrig with
//! Shoup twiddles in bit-reversed order. With ψ the primitive 2N-th root tfhe-ntt chose, its
//! output is tfhe-ntt's word for word: evaluation i at ψ^(2·rev(i)+1), every word in [0, q).

use crate::ring::{Modulus, Ring, ShoupConst};

/// Per ring modulus: the constants of the kernels, laid out as they are uploaded.
#[derive(Debug, Clone)]
pub struct NttTables {
    n: usize,
    log_n: u32,
    moduli: Vec<Modulus>,
    /// `[q, ⌊2^128/q⌋ low, ⌊2^128/q⌋ high]` per modulus (read by the CUDA executor only).
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) mods: Vec<u64>,
    /// ψ^rev(k) and its Shoup companion, N pairs per modulus.
    pub(crate) fwd: Vec<u64>,
    /// ψ^-rev(k) and its Shoup companion, N pairs per modulus.
    pub(crate) inv: Vec<u64>,
    /// N^{-1} and its Shoup companion per modulus.
    pub(crate) n_inv: Vec<u64>,
}

fn bit_rev(i: usize, log_n: u32) -> usize {
    i.reverse_bits() >> (usize::BITS - log_n)
}

impl NttTables {
    pub fn new(ring: &Ring) -> Self {
        let (n, log_n) = (ring.n(), ring.log_n());
        let moduli = ring.moduli().to_vec();
        let mut mods = Vec::with_capacity(3 * moduli.len());
        let mut fwd = Vec::with_capacity(2 * n * moduli.len());
        let mut inv = Vec::with_capacity(2 * n * moduli.len());
        let mut n_inv = Vec::with_capacity(2 * moduli.len());
        for (idx, m) in moduli.iter().enumerate() {
            let (lo, hi) = m.ratio();
            mods.extend([m.value(), lo, hi]);
            // ψ as tfhe-ntt chose it: its transform of X puts ψ^(2·rev(0)+1) = ψ first
            let mut x = vec![0u64; n];
            x[1] = 1;
            ring.ntt_limb(&mut x, idx);
            let psi = x[0];
            let psi_inv = m.inv(psi).expect("a root of unity is invertible");
            let mut powers = vec![1u64; n];
            let mut inv_powers = vec![1u64; n];
            for k in 1..n {
                powers[k] = m.mul(powers[k - 1], psi);
                inv_powers[k] = m.mul(inv_powers[k - 1], psi_inv);
            }
            for k in 0..n {
                let r = bit_rev(k, log_n);
                let (w, wi) = (m.shoup(powers[r]), m.shoup(inv_powers[r]));
                fwd.extend([w.w, w.w_shoup]);
                inv.extend([wi.w, wi.w_shoup]);
            }
            let c = ring.n_inv(idx);
            n_inv.extend([c.w, c.w_shoup]);
        }
        Self {
            n,
            log_n,
            moduli,
            mods,
            fwd,
            inv,
            n_inv,
        }
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn log_n(&self) -> u32 {
        self.log_n
    }

    pub fn modulus(&self, idx: usize) -> &Modulus {
        &self.moduli[idx]
    }

    fn twiddle(table: &[u64], n: usize, idx: usize, k: usize) -> ShoupConst {
        let at = 2 * (idx * n + k);
        ShoupConst {
            w: table[at],
            w_shoup: table[at + 1],
        }
    }

    /// The kernel's forward transform of one limb modulo ring modulus `idx`.
    pub fn forward(&self, idx: usize, a: &mut [u64]) {
        let (n, m) = (self.n, &self.moduli[idx]);
        for s in 0..self.log_n {
            let (groups, log_t) = (1usize << s, self.log_n - 1 - s);
            let t = 1usize << log_t;
            for b in 0..n / 2 {
                let i = b >> log_t;
                let j = (i << (log_t + 1)) | (b & (t - 1));
                let w = Self::twiddle(&self.fwd, n, idx, groups + i);
                let (u, v) = (a[j], m.mul_shoup(a[j + t], w));
                a[j] = m.add(u, v);
                a[j + t] = m.sub(u, v);
            }
        }
    }

    /// The kernel's inverse transform of one limb, times N unless `normalize`.
    pub fn inverse(&self, idx: usize, a: &mut [u64], normalize: bool) {
        let (n, m) = (self.n, &self.moduli[idx]);
        for s in 0..self.log_n {
            let (t, groups) = (1usize << s, n >> (s + 1));
            for b in 0..n / 2 {
                let i = b >> s;
                let j = (i << (s + 1)) | (b & (t - 1));
                let w = Self::twiddle(&self.inv, n, idx, groups + i);
                let (u, v) = (a[j], a[j + t]);
                a[j] = m.add(u, v);
                a[j + t] = m.mul_shoup(m.sub(u, v), w);
            }
        }
        if normalize {
            let c = ShoupConst {
                w: self.n_inv[2 * idx],
                w_shoup: self.n_inv[2 * idx + 1],
            };
            for x in a.iter_mut() {
                *x = m.mul_shoup(*x, c);
            }
        }
    }
}
