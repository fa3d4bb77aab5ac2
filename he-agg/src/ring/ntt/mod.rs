//! Negacyclic NTTs for one prime at every SIMD level: tfhe-ntt where it is the CPU's own best
//! (its IFMA kernels are the fastest there are), and HEAL's kernels for the levels below it —
//! double-precision butterflies for primes below 2^51 on AVX2 and AVX-512, Harvey's 64-bit
//! butterflies in vector lanes for wider primes, scalar Harvey butterflies otherwise. Every path gives the same words as tfhe-ntt (same root, same
//! bit-reversed order, reduced below p): ciphertexts made on one machine are read on another.

#[cfg(target_arch = "x86_64")]
mod float;
#[cfg(target_arch = "aarch64")]
mod float_neon;
#[cfg(target_arch = "x86_64")]
mod lanes;
mod shoup;

use tfhe_ntt::prime64::Plan;

use crate::simd::Level;

/// Primes below 2^LANES_MAX_BITS run in 64-bit vector lanes (x86 only).
#[cfg(target_arch = "x86_64")]
const LANES_MAX_BITS: u32 = lanes::MAX_BITS;
#[cfg(not(target_arch = "x86_64"))]
const LANES_MAX_BITS: u32 = 0;

/// One prime's transforms.
pub struct NttPlan {
    tfhe: Plan,
    p: u64,
    /// The CPU's best level, read once (the kernel choice runs per limb).
    best: Level,
    /// ψ^k at index bitrev(k), and the inverse ψ^-k, with their Shoup constants.
    fwd: Box<[u64]>,
    fwd_shoup: Box<[u64]>,
    inv: Box<[u64]>,
    inv_shoup: Box<[u64]>,
    /// The same twiddles as doubles and w/p, for primes below 2^51.
    float: Option<FloatTwiddles>,
}

struct FloatTwiddles {
    fwd: Box<[f64]>,
    fwd_q: Box<[f64]>,
    inv: Box<[f64]>,
    inv_q: Box<[f64]>,
}

/// Which kernel a transform runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kernel {
    Tfhe,
    /// Harvey/Shoup butterflies, one at a time, portable code.
    Shoup,
    /// The same compiled with BMI2's mulx.
    ShoupMulx,
    /// Harvey/Shoup butterflies in 64-bit vector lanes (primes below 2^61).
    LanesAvx2,
    LanesAvx512,
    /// Double-precision butterflies (primes below 2^51).
    FloatAvx2,
    FloatAvx512,
    FloatNeon,
}

impl Kernel {
    /// The level a CPU needs to run this kernel (tfhe-ntt picks its own path).
    pub fn level(self) -> Level {
        match self {
            Kernel::Tfhe | Kernel::Shoup => Level::Scalar,
            Kernel::ShoupMulx | Kernel::LanesAvx2 | Kernel::FloatAvx2 => Level::Avx2,
            Kernel::LanesAvx512 | Kernel::FloatAvx512 => Level::Avx512,
            Kernel::FloatNeon => Level::Neon,
        }
    }
}

/// Words per block of the depth-first stages: a block and its twiddles stay in L1.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
const BLOCK: usize = 2048;

/// The order the vector kernels run their stages in, as (words, half-block t, twiddles): the
/// stages whose blocks are wider than [`BLOCK`] pass over the whole limb, the others run block
/// by block, so a limb goes through L2 a few times instead of once per stage. The words of
/// every stage are the same as in the textbook order, only the order of independent butterflies
/// changes.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn stage_order<const FWD: bool>(
    n: usize,
) -> impl Iterator<Item = (std::ops::Range<usize>, usize, std::ops::Range<usize>)> {
    let block = n.min(BLOCK);
    let log_n = n.trailing_zeros();
    // stage s (forward order) has half-block t = n >> (s + 1) and twiddles m = 2^s … 2^(s+1)
    let stages = 0..log_n;
    let wide = move |s: u32| 2 * (n >> (s + 1)) > block;
    let whole = move |s: u32| {
        let (t, m) = (n >> (s + 1), 1usize << s);
        (0..n, t, m..2 * m)
    };
    let blocked = move |(b, s): (usize, u32)| {
        let (t, m) = (n >> (s + 1), 1usize << s);
        let per = block / (2 * t);
        (
            b * block..(b + 1) * block,
            t,
            m + b * per..m + (b + 1) * per,
        )
    };
    let (first_wide, rest): (Vec<u32>, Vec<u32>) = stages.partition(|&s| wide(s));
    let blocks = n / block;
    let order: Vec<_> = if FWD {
        let deep = (0..blocks).flat_map(|b| rest.iter().map(move |&s| (b, s)));
        first_wide
            .iter()
            .map(|&s| whole(s))
            .chain(deep.map(blocked))
            .collect()
    } else {
        let deep = (0..blocks).flat_map(|b| rest.iter().rev().map(move |&s| (b, s)));
        deep.map(blocked)
            .chain(first_wide.iter().rev().map(|&s| whole(s)))
            .collect()
    };
    order.into_iter()
}

fn mul_mod(a: u64, b: u64, p: u64) -> u64 {
    ((a as u128 * b as u128) % p as u128) as u64
}

fn pow_mod(mut b: u64, mut e: u64, p: u64) -> u64 {
    let mut r = 1;
    while e > 0 {
        if e & 1 == 1 {
            r = mul_mod(r, b, p);
        }
        b = mul_mod(b, b, p);
        e >>= 1;
    }
    r
}

impl NttPlan {
    /// The plan for degree `n` modulo the NTT-friendly prime `p` (< 2^62), or `None` if
    /// tfhe-ntt has none.
    pub fn new(n: usize, p: u64) -> Option<Self> {
        let tfhe = Plan::try_new(n, p)?;
        // tfhe-ntt's root: the transform of X holds ψ^(2·bitrev(k)+1) at k, so ψ at 0
        let mut x = vec![0u64; n];
        x[1] = 1;
        tfhe.fwd(&mut x);
        let psi = x[0];
        let psi_inv = pow_mod(psi, 2 * n as u64 - 1, p);
        let bits = n.trailing_zeros();
        let (mut fwd, mut inv) = (vec![0u64; n], vec![0u64; n]);
        let (mut a, mut b) = (1u64, 1u64);
        for k in 0..n {
            let r = k.reverse_bits() >> (usize::BITS - bits);
            fwd[r] = a;
            inv[r] = b;
            a = mul_mod(a, psi, p);
            b = mul_mod(b, psi_inv, p);
        }
        let shoup = |v: &[u64]| -> Box<[u64]> {
            v.iter()
                .map(|&w| (((w as u128) << 64) / p as u128) as u64)
                .collect()
        };
        #[cfg(target_arch = "x86_64")]
        let float_bits = Some(float::MAX_BITS);
        #[cfg(target_arch = "aarch64")]
        let float_bits = Some(float_neon::MAX_BITS);
        #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
        let float_bits: Option<u32> = None;
        let float = float_bits.filter(|&b| p < 1 << b).map(|_| {
            let as_f = |v: &[u64]| -> Box<[f64]> { v.iter().map(|&w| w as f64).collect() };
            let quot =
                |v: &[u64]| -> Box<[f64]> { v.iter().map(|&w| w as f64 / p as f64).collect() };
            FloatTwiddles {
                fwd: as_f(&fwd),
                fwd_q: quot(&fwd),
                inv: as_f(&inv),
                inv_q: quot(&inv),
            }
        });
        Some(Self {
            tfhe,
            p,
            best: Level::detected(),
            fwd_shoup: shoup(&fwd),
            inv_shoup: shoup(&inv),
            fwd: fwd.into(),
            inv: inv.into(),
            float,
        })
    }

    /// The kernel used at `level` on this CPU. tfhe-ntt detects the CPU itself, so it runs
    /// only at the CPU's own best level (forcing a lower one would not reach it); below that,
    /// HEAL's kernels, double precision wherever the prime allows.
    pub fn kernel(&self, level: Level) -> Kernel {
        let best = self.best;
        match level {
            Level::Ifma => Kernel::Tfhe,
            Level::Avx512 if self.float.is_some() => Kernel::FloatAvx512,
            Level::Avx2 if self.float.is_some() => Kernel::FloatAvx2,
            Level::Neon if self.float.is_some() => Kernel::FloatNeon,
            Level::Avx2 if self.p < 1 << LANES_MAX_BITS => Kernel::LanesAvx2,
            Level::Avx512 if self.p < 1 << LANES_MAX_BITS => Kernel::LanesAvx512,
            l if l == best && l >= Level::Avx2 => Kernel::Tfhe,
            Level::Avx2 | Level::Avx512 => Kernel::ShoupMulx,
            // tfhe-ntt's portable code executes 12% fewer instructions than HEAL's Harvey
            // butterflies on aarch64 (scripts/aarch64.sh --count); on x86 it would pick its
            // vector path, so the scalar level keeps HEAL's
            Level::Scalar | Level::Neon if cfg!(target_arch = "aarch64") => Kernel::Tfhe,
            Level::Scalar | Level::Neon => Kernel::Shoup,
        }
    }

    /// Every kernel this CPU can run for this prime (for tests and benchmarks).
    pub fn kernels(&self) -> Vec<Kernel> {
        use Kernel::*;
        let lanes = cfg!(target_arch = "x86_64") && self.p < 1 << LANES_MAX_BITS;
        [
            Tfhe,
            Shoup,
            ShoupMulx,
            LanesAvx2,
            LanesAvx512,
            FloatAvx2,
            FloatAvx512,
            FloatNeon,
        ]
        .into_iter()
        .filter(|k| k.level().is_available())
        .filter(|k| self.float.is_some() || !matches!(k, FloatAvx2 | FloatAvx512 | FloatNeon))
        .filter(|k| lanes || !matches!(k, LanesAvx2 | LanesAvx512))
        .collect()
    }

    /// Forward transform of one limb (standard order in, bit-reversed evaluations out).
    #[inline]
    pub fn fwd(&self, buf: &mut [u64]) {
        self.fwd_with(self.kernel(crate::simd::level()), buf);
    }

    /// Inverse transform of one limb, without the division by N.
    #[inline]
    pub fn inv(&self, buf: &mut [u64]) {
        self.inv_with(self.kernel(crate::simd::level()), buf);
    }

    /// Forward transform with a chosen kernel (one of [`NttPlan::kernels`]).
    pub fn fwd_with(&self, kernel: Kernel, buf: &mut [u64]) {
        self.run(kernel, buf, true)
    }

    /// Inverse transform (without the division by N) with a chosen kernel.
    pub fn inv_with(&self, kernel: Kernel, buf: &mut [u64]) {
        self.run(kernel, buf, false)
    }

    fn run(&self, kernel: Kernel, buf: &mut [u64], forward: bool) {
        assert_eq!(buf.len(), self.fwd.len(), "limb length is the ring degree");
        // a kernel above the CPU's level would be an illegal instruction, not an error
        assert!(
            kernel.level().is_available(),
            "{kernel:?} needs {}, this CPU has up to {}",
            kernel.level(),
            self.best
        );
        let p = self.p;
        let (w, ws) = if forward {
            (&self.fwd[..], &self.fwd_shoup[..])
        } else {
            (&self.inv[..], &self.inv_shoup[..])
        };
        match (kernel, &self.float) {
            #[cfg(target_arch = "x86_64")]
            (Kernel::FloatAvx2 | Kernel::FloatAvx512, Some(f)) => {
                let (fw, fq) = if forward {
                    (&f.fwd[..], &f.fwd_q[..])
                } else {
                    (&f.inv[..], &f.inv_q[..])
                };
                // SAFETY: the CPU has the kernel's level (asserted above).
                unsafe {
                    match (kernel, forward) {
                        (Kernel::FloatAvx2, true) => float::fwd_avx2(buf, p, fw, fq),
                        (Kernel::FloatAvx2, false) => float::inv_avx2(buf, p, fw, fq),
                        (_, true) => float::fwd_avx512(buf, p, fw, fq),
                        (_, false) => float::inv_avx512(buf, p, fw, fq),
                    }
                }
            }
            #[cfg(target_arch = "aarch64")]
            (Kernel::FloatNeon, Some(f)) => {
                let (fw, fq) = if forward {
                    (&f.fwd[..], &f.fwd_q[..])
                } else {
                    (&f.inv[..], &f.inv_q[..])
                };
                // SAFETY: NEON is part of every aarch64 CPU (and the level was asserted).
                unsafe {
                    if forward {
                        float_neon::fwd(buf, p, fw, fq)
                    } else {
                        float_neon::inv(buf, p, fw, fq)
                    }
                }
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            (Kernel::ShoupMulx, _) => unsafe {
                if forward {
                    x86::shoup_fwd_mulx(buf, p, w, ws)
                } else {
                    x86::shoup_inv_mulx(buf, p, w, ws)
                }
            },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above; `kernels` offers these only for primes below 2^61.
            (Kernel::LanesAvx2 | Kernel::LanesAvx512, _) if p < 1 << LANES_MAX_BITS => unsafe {
                match (kernel, forward) {
                    (Kernel::LanesAvx2, true) => lanes::fwd_avx2(buf, p, w, ws),
                    (Kernel::LanesAvx2, false) => lanes::inv_avx2(buf, p, w, ws),
                    (_, true) => lanes::fwd_avx512(buf, p, w, ws),
                    (_, false) => lanes::inv_avx512(buf, p, w, ws),
                }
            },
            (Kernel::Tfhe, _) if forward => self.tfhe.fwd(buf),
            (Kernel::Tfhe, _) => self.tfhe.inv(buf),
            _ if forward => shoup::fwd::<true>(buf, p, w, ws),
            _ => shoup::inv::<true>(buf, p, w, ws),
        }
    }
}

/// The 64-bit kernel compiled for AVX2 and BMI2 (mulx).
#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::shoup;

    #[target_feature(enable = "avx2,fma,bmi2")]
    pub(super) unsafe fn shoup_fwd_mulx(d: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
        shoup::fwd::<false>(d, p, w, ws)
    }
    #[target_feature(enable = "avx2,fma,bmi2")]
    pub(super) unsafe fn shoup_inv_mulx(d: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
        shoup::inv::<false>(d, p, w, ws)
    }
}

#[cfg(test)]
mod tests;
