//! Limb-wise modular arithmetic — one residue vector modulo one prime — in AVX2 lanes where the
//! SIMD level allows it, portable code otherwise: sums and differences (every prime), and
//! products by constants with precomputed Shoup quotients (primes below 2^61): one constant per
//! limb (RNS constants, N^{-1}) or one per coefficient (a public key, a secret key). Products of
//! two variable operands stay scalar: without a 64-bit vector multiply-high they cost as much in
//! lanes as in 64-bit registers. Every path gives the same words.

use super::modulus::{Modulus, ShoupConst};

/// Whether the AVX2 kernels run for `m` at the level in force.
#[cfg(target_arch = "x86_64")]
#[inline]
fn lanes(m: &Modulus) -> bool {
    crate::simd::level() >= crate::simd::Level::Avx2 && m.bits() <= super::lanes::MAX_BITS
}

/// Sums and differences need no multiply: lanes for every prime (values below 2^62).
#[cfg(target_arch = "x86_64")]
#[inline]
fn lanes_any() -> bool {
    crate::simd::level() >= crate::simd::Level::Avx2
}

/// out = a + b.
pub fn add(out: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
    debug_assert!(out.len() == a.len() && a.len() == b.len());
    #[cfg(target_arch = "x86_64")]
    if lanes_any() {
        // SAFETY: the level (checked) includes AVX2; lengths are equal.
        return unsafe {
            x86::add(
                out.as_mut_ptr(),
                a.as_ptr(),
                b.as_ptr(),
                out.len(),
                m.value(),
            )
        };
    }
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = m.add(x, y);
    }
}

/// a += b.
pub fn add_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if lanes_any() {
        let p = a.as_mut_ptr();
        // SAFETY: as in `add`.
        return unsafe { x86::add(p, p, b.as_ptr(), b.len(), m.value()) };
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.add(*x, y);
    }
}

/// out = a − b.
pub fn sub(out: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
    debug_assert!(out.len() == a.len() && a.len() == b.len());
    #[cfg(target_arch = "x86_64")]
    if lanes_any() {
        // SAFETY: as in `add`.
        return unsafe {
            x86::sub(
                out.as_mut_ptr(),
                a.as_ptr(),
                b.as_ptr(),
                out.len(),
                m.value(),
            )
        };
    }
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = m.sub(x, y);
    }
}

/// a −= b.
pub fn sub_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    if lanes_any() {
        let p = a.as_mut_ptr();
        // SAFETY: as in `add`.
        return unsafe { x86::sub(p, p, b.as_ptr(), b.len(), m.value()) };
    }
    for (x, &y) in a.iter_mut().zip(b) {
        *x = m.sub(*x, y);
    }
}

/// out = x·c for words x below 2^63 (lazily reduced input is fine), result in [0, q).
pub fn mul_const(out: &mut [u64], x: &[u64], c: ShoupConst, m: &Modulus) {
    debug_assert_eq!(out.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        // SAFETY: the level includes AVX2 and q < 2^61; lengths are equal.
        return unsafe { x86::mul_const(out.as_mut_ptr(), x.as_ptr(), out.len(), c, m.value()) };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = m.mul_shoup(v, c);
    }
}

/// a ← a·c, as [`mul_const`].
pub fn mul_const_assign(a: &mut [u64], c: ShoupConst, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        let p = a.as_mut_ptr();
        // SAFETY: as in `mul_const`; the kernel reads each word before writing it.
        return unsafe { x86::mul_const(p, p, a.len(), c, m.value()) };
    }
    for x in a.iter_mut() {
        *x = m.mul_shoup(*x, c);
    }
}

/// a ← a + c for one constant c < q.
pub fn add_const_assign(a: &mut [u64], c: u64, m: &Modulus) {
    #[cfg(target_arch = "x86_64")]
    if lanes_any() {
        // SAFETY: the level includes AVX2.
        return unsafe { x86::add_const_assign(a, c, m.value()) };
    }
    for x in a.iter_mut() {
        *x = m.add(*x, c);
    }
}

/// a ← (a − e)·c (a, e reduced): the last step of a rescale or a division by P.
pub fn sub_mul_const_assign(a: &mut [u64], e: &[u64], c: ShoupConst, m: &Modulus) {
    debug_assert_eq!(a.len(), e.len());
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        // SAFETY: as in `mul_const_assign`; lengths are equal.
        return unsafe { x86::sub_mul_const_assign(a, e, c, m.value()) };
    }
    for (x, &y) in a.iter_mut().zip(e) {
        *x = m.mul_shoup(m.sub(*x, y), c);
    }
}

/// x mod q for any words x below 2^63 (residues of another prime), into `out`.
pub fn reduce(out: &mut [u64], x: &[u64], m: &Modulus) {
    debug_assert_eq!(out.len(), x.len());
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        // SAFETY: as in `mul_const`; a product by 1 with its Shoup quotient ⌊2^64/q⌋ is a
        // reduction.
        return unsafe {
            x86::mul_const(
                out.as_mut_ptr(),
                x.as_ptr(),
                out.len(),
                m.shoup(1),
                m.value(),
            )
        };
    }
    for (o, &v) in out.iter_mut().zip(x) {
        *o = m.reduce(v);
    }
}

/// Runs `body` compiled with BMI2 (mulx, and variable shifts without CL) where the level
/// allows: the scalar products of two variable operands, which have no cheaper vector form.
macro_rules! with_bmi2 {
    ($(#[$meta:meta])* pub fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn generic($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,bmi2")]
            unsafe fn bmi2($($arg: $ty),*) { generic($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            if crate::simd::level() >= crate::simd::Level::Avx2 {
                // SAFETY: the level includes AVX2 and BMI2 (simd::Level::Avx2).
                return unsafe { bmi2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}

with_bmi2! {
    /// out = a ⊙ b (variable operands, reduced).
    pub fn mul(out: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
        let n = out.len();
        let (a, b) = (&a[..n], &b[..n]);
        for k in 0..n {
            out[k] = m.mul(a[k], b[k]);
        }
    }
}

with_bmi2! {
    /// a ⊙= b.
    pub fn mul_assign(a: &mut [u64], b: &[u64], m: &Modulus) {
        let n = a.len();
        let b = &b[..n];
        for k in 0..n {
            a[k] = m.mul(a[k], b[k]);
        }
    }
}

with_bmi2! {
    /// out = c + a ⊙ b (variable operands, reduced).
    pub fn mul_add_var(out: &mut [u64], c: &[u64], a: &[u64], b: &[u64], m: &Modulus) {
        let n = out.len();
        let (c, a, b) = (&c[..n], &a[..n], &b[..n]);
        if m.bits() <= 61 {
            for k in 0..n {
                out[k] = m.reduce_sum3(a[k] as u128 * b[k] as u128 + c[k] as u128);
            }
        } else {
            for k in 0..n {
                out[k] = m.add(c[k], m.mul(a[k], b[k]));
            }
        }
    }
}

with_bmi2! {
    /// acc += a ⊙ b.
    pub fn mul_add_var_assign(acc: &mut [u64], a: &[u64], b: &[u64], m: &Modulus) {
        let n = acc.len();
        let (a, b) = (&a[..n], &b[..n]);
        if m.bits() <= 61 {
            for k in 0..n {
                acc[k] = m.reduce_sum3(a[k] as u128 * b[k] as u128 + acc[k] as u128);
            }
        } else {
            for k in 0..n {
                acc[k] = m.add(acc[k], m.mul(a[k], b[k]));
            }
        }
    }
}

with_bmi2! {
    /// out = a ⊙ b + c ⊙ d with one reduction (the middle term of a ciphertext product).
    pub fn mul_sum2(out: &mut [u64], a: &[u64], b: &[u64], c: &[u64], d: &[u64], m: &Modulus) {
        let n = out.len();
        let (a, b, c, d) = (&a[..n], &b[..n], &c[..n], &d[..n]);
        if m.bits() <= 61 {
            for k in 0..n {
                out[k] = m.reduce_sum3(a[k] as u128 * b[k] as u128 + c[k] as u128 * d[k] as u128);
            }
        } else {
            for k in 0..n {
                out[k] = m.reduce_u128(a[k] as u128 * b[k] as u128 + c[k] as u128 * d[k] as u128);
            }
        }
    }
}

with_bmi2! {
    /// acc += Σ_j a_j ⊙ b_j with one reduction per coefficient for up to 16 terms at a time
    /// (each product is below 2^124, so 16 of them and acc stay below 2^128).
    pub fn mul_sum_assign(acc: &mut [u64], terms: &[(&[u64], &[u64])], m: &Modulus) {
        let n = acc.len();
        for group in terms.chunks(16) {
            for k in 0..n {
                let mut s = acc[k] as u128;
                for (a, b) in group {
                    s += a[k] as u128 * b[k] as u128;
                }
                acc[k] = m.reduce_u128(s);
            }
        }
    }
}

/// A polynomial limb fixed for many products (a public or secret key), with the Shoup quotient
/// of each coefficient.
#[derive(Clone)]
pub struct ShoupLimb {
    w: Box<[u64]>,
    ws: Box<[u64]>,
}

impl zeroize::Zeroize for ShoupLimb {
    fn zeroize(&mut self) {
        self.w.zeroize();
        self.ws.zeroize();
    }
}

impl ShoupLimb {
    /// `w` reduced modulo q.
    pub fn new(w: &[u64], m: &Modulus) -> Self {
        let ws = w.iter().map(|&x| m.shoup(x).w_shoup).collect();
        Self { w: w.into(), ws }
    }
}

/// out = c + x ⊙ w (x, c reduced).
pub fn mul_add(out: &mut [u64], c: &[u64], x: &[u64], w: &ShoupLimb, m: &Modulus) {
    debug_assert!(out.len() == c.len() && c.len() == x.len() && x.len() == w.w.len());
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        // SAFETY: as in `mul_const_assign`; lengths are equal.
        return unsafe {
            x86::mul_add(
                out.as_mut_ptr(),
                c.as_ptr(),
                x.as_ptr(),
                w.w.as_ptr(),
                w.ws.as_ptr(),
                out.len(),
                m.value(),
            )
        };
    }
    for ((((o, &z), &y), &w), &ws) in out.iter_mut().zip(c).zip(x).zip(&w.w[..]).zip(&w.ws[..]) {
        *o = m.add(z, m.mul_shoup(y, ShoupConst { w, w_shoup: ws }));
    }
}

/// acc += x ⊙ w (x, acc reduced).
pub fn mul_add_assign(acc: &mut [u64], x: &[u64], w: &ShoupLimb, m: &Modulus) {
    debug_assert!(acc.len() == x.len() && x.len() == w.w.len());
    #[cfg(target_arch = "x86_64")]
    if lanes(m) {
        let p = acc.as_mut_ptr();
        // SAFETY: as in `mul_const`; lengths are equal.
        return unsafe {
            x86::mul_add(
                p,
                p,
                x.as_ptr(),
                w.w.as_ptr(),
                w.ws.as_ptr(),
                acc.len(),
                m.value(),
            )
        };
    }
    for (((a, &y), &w), &ws) in acc.iter_mut().zip(x).zip(&w.w[..]).zip(&w.ws[..]) {
        *a = m.add(*a, m.mul_shoup(y, ShoupConst { w, w_shoup: ws }));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    #![allow(unsafe_op_in_unsafe_fn)] // kernels of one target level

    use std::arch::x86_64::*;

    use super::ShoupConst;
    use crate::ring::lanes::low_word_one;
    use crate::ring::lanes::v4::{self, K, W, fold, lift, load, splat, store};

    /// Runs `body(offset)` for every whole vector of four words, and `tail(i)` for the rest.
    #[inline(always)]
    unsafe fn each(len: usize, mut body: impl FnMut(usize), mut tail: impl FnMut(usize)) {
        let whole = len - len % 4;
        let mut i = 0;
        while i < whole {
            body(i);
            i += 4;
        }
        for j in whole..len {
            tail(j);
        }
    }

    // Every kernel below takes pointers: `out` may be one of its inputs (each word is read
    // before it is written), which references could not express.

    #[target_feature(enable = "avx2")]
    pub unsafe fn add(o: *mut u64, a: *const u64, b: *const u64, len: usize, p: u64) {
        let pv = splat(p);
        each(
            len,
            |i| {
                store(
                    o.add(i),
                    fold(_mm256_add_epi64(load(a.add(i)), load(b.add(i))), pv),
                )
            },
            |i| *o.add(i) = csub(*a.add(i) + *b.add(i), p),
        );
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn sub(o: *mut u64, a: *const u64, b: *const u64, len: usize, p: u64) {
        let pv = splat(p);
        each(
            len,
            |i| {
                store(
                    o.add(i),
                    lift(_mm256_sub_epi64(load(a.add(i)), load(b.add(i))), pv),
                )
            },
            |i| {
                let d = (*a.add(i)).wrapping_sub(*b.add(i));
                *o.add(i) = d.min(d.wrapping_add(p));
            },
        );
    }

    /// v in [0, 2p) to [0, p), for the tails.
    #[inline(always)]
    fn csub(v: u64, p: u64) -> u64 {
        v.min(v.wrapping_sub(p))
    }

    /// y·w mod p in [0, p) (Modulus::mul_shoup), for the tails.
    #[inline(always)]
    fn shoup(y: u64, w: u64, ws: u64, p: u64) -> u64 {
        let q = ((y as u128 * ws as u128) >> 64) as u64;
        csub(y.wrapping_mul(w).wrapping_sub(q.wrapping_mul(p)), p)
    }

    #[target_feature(enable = "avx2")]
    unsafe fn mul_const_s<const S: bool>(
        out: *mut u64,
        x: *const u64,
        len: usize,
        c: ShoupConst,
        p: u64,
    ) {
        let (k, w) = (K::new(p), W::splat(c.w, c.w_shoup));
        each(
            len,
            |i| store(out.add(i), v4::mul_shoup::<S>(load(x.add(i)), w, k)),
            |i| *out.add(i) = shoup(*x.add(i), c.w, c.w_shoup, p),
        );
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn add_const_assign(a: &mut [u64], c: u64, p: u64) {
        let (pv, cv) = (splat(p), splat(c));
        let pa = a.as_mut_ptr();
        each(
            a.len(),
            |i| store(pa.add(i), fold(_mm256_add_epi64(load(pa.add(i)), cv), pv)),
            |i| *pa.add(i) = csub(*pa.add(i) + c, p),
        );
    }

    #[target_feature(enable = "avx2")]
    unsafe fn sub_mul_const_assign_s<const S: bool>(
        a: &mut [u64],
        e: &[u64],
        c: ShoupConst,
        p: u64,
    ) {
        let (k, w) = (K::new(p), W::splat(c.w, c.w_shoup));
        let (pa, pe) = (a.as_mut_ptr(), e.as_ptr());
        each(
            a.len(),
            |i| {
                // a − e + p in (0, 2p): no reduction needed before the lazy product
                let d = _mm256_sub_epi64(_mm256_add_epi64(load(pa.add(i)), k.p), load(pe.add(i)));
                store(pa.add(i), v4::mul_shoup::<S>(d, w, k))
            },
            |i| *pa.add(i) = shoup(*pa.add(i) + p - *pe.add(i), c.w, c.w_shoup, p),
        );
    }

    #[target_feature(enable = "avx2")]
    unsafe fn mul_add_s<const S: bool>(
        o: *mut u64,
        c: *const u64,
        x: *const u64,
        w: *const u64,
        ws: *const u64,
        len: usize,
        p: u64,
    ) {
        let k = K::new(p);
        each(
            len,
            |i| {
                let v = v4::mul_shoup_lazy::<S>(load(x.add(i)), W::load(w.add(i), ws.add(i)), k);
                // c + v < 3p: two folds
                let s = fold(_mm256_add_epi64(load(c.add(i)), v), k.two_p);
                store(o.add(i), fold(s, k.p))
            },
            |i| {
                let v = shoup(*x.add(i), *w.add(i), *ws.add(i), p) + *c.add(i);
                *o.add(i) = csub(v, p);
            },
        );
    }

    // The entry points: each kernel in its two forms, for primes ≡ 1 mod 2^32 and the others.

    pub unsafe fn mul_const(out: *mut u64, x: *const u64, len: usize, c: ShoupConst, p: u64) {
        if low_word_one(p) {
            mul_const_s::<true>(out, x, len, c, p)
        } else {
            mul_const_s::<false>(out, x, len, c, p)
        }
    }

    pub unsafe fn sub_mul_const_assign(a: &mut [u64], e: &[u64], c: ShoupConst, p: u64) {
        if low_word_one(p) {
            sub_mul_const_assign_s::<true>(a, e, c, p)
        } else {
            sub_mul_const_assign_s::<false>(a, e, c, p)
        }
    }

    pub unsafe fn mul_add(
        o: *mut u64,
        c: *const u64,
        x: *const u64,
        w: *const u64,
        ws: *const u64,
        len: usize,
        p: u64,
    ) {
        if low_word_one(p) {
            mul_add_s::<true>(o, c, x, w, ws, len, p)
        } else {
            mul_add_s::<false>(o, c, x, w, ws, len, p)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::{Level, set_level};

    /// Every kernel at every level this CPU has against the scalar arithmetic, for primes of
    /// every width the ring takes (the 62-bit one takes the portable path everywhere).
    #[test]
    fn every_level_gives_the_scalar_words() {
        let primes = [
            65_537u64,
            (1 << 40) - 1_179_647,
            1_152_921_504_606_748_673,
            (1 << 61) - 1,
            4_611_686_018_427_322_369,
            // ≡ 1 mod 2^32: the kernels' other form
            (0x0fff_fff0u64 << 32) | 1,
        ];
        let before = crate::simd::level();
        for &p in &primes {
            let m = Modulus::new(p);
            let n = 37; // not a multiple of four: the tails too
            let mut prng = crate::ring::Prng::from_seed(&[p as u8; 32]);
            let mut draw = || {
                let mut v = vec![0u64; n];
                prng.fill_uniform(&m, &mut v);
                v[0] = p - 1;
                v[1] = 0;
                v
            };
            let (a, b, wv) = (draw(), draw(), draw());
            let wide: Vec<u64> = a
                .iter()
                .map(|&x| x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 2)
                .collect();
            let c = m.shoup(wv[2]);
            let sl = ShoupLimb::new(&wv, &m);
            let want_add: Vec<u64> = a.iter().zip(&b).map(|(&x, &y)| m.add(x, y)).collect();
            let want_sub: Vec<u64> = a.iter().zip(&b).map(|(&x, &y)| m.sub(x, y)).collect();
            let want_mulc: Vec<u64> = wide.iter().map(|&x| m.mul_shoup(x, c)).collect();
            let want_submul: Vec<u64> = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| m.mul(m.sub(x, y), c.w))
                .collect();
            let want_red: Vec<u64> = wide.iter().map(|&x| x % p).collect();
            let want_fma: Vec<u64> = (0..n).map(|k| m.add(b[k], m.mul(a[k], wv[k]))).collect();
            for level in Level::supported() {
                set_level(level).unwrap();
                let mut out = vec![0; n];
                add(&mut out, &a, &b, &m);
                assert_eq!(out, want_add, "add, {level}, p = {p}");
                let mut x = a.clone();
                add_assign(&mut x, &b, &m);
                assert_eq!(x, want_add, "add_assign, {level}, p = {p}");
                sub(&mut out, &a, &b, &m);
                assert_eq!(out, want_sub, "sub, {level}, p = {p}");
                let mut x = a.clone();
                sub_assign(&mut x, &b, &m);
                assert_eq!(x, want_sub, "sub_assign, {level}, p = {p}");
                let mut x = wide.clone();
                mul_const_assign(&mut x, c, &m);
                assert_eq!(x, want_mulc, "mul_const_assign, {level}, p = {p}");
                mul_const(&mut out, &wide, c, &m);
                assert_eq!(out, want_mulc, "mul_const, {level}, p = {p}");
                let mut x = a.clone();
                add_const_assign(&mut x, wv[3], &m);
                let want: Vec<u64> = a.iter().map(|&v| m.add(v, wv[3])).collect();
                assert_eq!(x, want, "add_const_assign, {level}, p = {p}");
                let mut x = a.clone();
                sub_mul_const_assign(&mut x, &b, c, &m);
                assert_eq!(x, want_submul, "sub_mul_const_assign, {level}, p = {p}");
                reduce(&mut out, &wide, &m);
                assert_eq!(out, want_red, "reduce, {level}, p = {p}");
                mul_add(&mut out, &b, &a, &sl, &m);
                assert_eq!(out, want_fma, "mul_add, {level}, p = {p}");
                let mut x = b.clone();
                mul_add_assign(&mut x, &a, &sl, &m);
                assert_eq!(x, want_fma, "mul_add_assign, {level}, p = {p}");
                mul_add_var(&mut out, &b, &a, &wv, &m);
                assert_eq!(out, want_fma, "mul_add_var, {level}, p = {p}");
                let mut x = b.clone();
                mul_add_var_assign(&mut x, &a, &wv, &m);
                assert_eq!(x, want_fma, "mul_add_var_assign, {level}, p = {p}");
                let want_mul: Vec<u64> = (0..n).map(|k| m.mul(a[k], wv[k])).collect();
                mul(&mut out, &a, &wv, &m);
                assert_eq!(out, want_mul, "mul, {level}, p = {p}");
                let mut x = a.clone();
                mul_assign(&mut x, &wv, &m);
                assert_eq!(x, want_mul, "mul_assign, {level}, p = {p}");
                let want_sum2: Vec<u64> = (0..n)
                    .map(|k| m.add(m.mul(a[k], wv[k]), m.mul(b[k], a[k])))
                    .collect();
                mul_sum2(&mut out, &a, &wv, &b, &a, &m);
                assert_eq!(out, want_sum2, "mul_sum2, {level}, p = {p}");
                // 37 terms of the largest words: three groups, one of them partial
                let top = vec![p - 1; n];
                let mut terms: Vec<(&[u64], &[u64])> = vec![(&a, &wv), (&b, &a)];
                terms.extend(std::iter::repeat_n((&top[..], &top[..]), 35));
                let mut want_sum = b.clone();
                for (x, y) in &terms {
                    for k in 0..n {
                        want_sum[k] = m.add(want_sum[k], m.mul(x[k], y[k]));
                    }
                }
                let mut x = b.clone();
                mul_sum_assign(&mut x, &terms, &m);
                assert_eq!(x, want_sum, "mul_sum_assign, {level}, p = {p}");
            }
        }
        set_level(before).unwrap();
    }
}
