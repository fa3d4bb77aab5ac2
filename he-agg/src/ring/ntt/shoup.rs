//! Negacyclic NTTs on 64-bit words with Harvey's lazy butterflies and Shoup multiplication by
//! the twiddles (values stay below 4p between stages, one multiply-high and two low multiplies
//! per butterfly): the portable path, as fast as SEAL's, for primes below 2^62.

/// The value itself, in a general-purpose register: an empty `asm!` LLVM cannot see through.
/// Without it LLVM vectorizes these loops for SSE2 or NEON, which have no 64-bit multiply, and
/// emulates the products and the unsigned minima there at twice the cost of scalar code
/// (measured: 78 against 65 µs per NTT of 2^13 at the x86 scalar level). `PIN = false` lets
/// it vectorize where AVX2 makes that pay (the mulx build: 37 against 58 µs).
#[inline(always)]
fn scalar<const PIN: bool>(mut x: u64) -> u64 {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if PIN {
        // SAFETY: an empty template; the operand is only pinned to a register.
        unsafe {
            std::arch::asm!("/* {0} */", inout(reg) x, options(pure, nomem, nostack, preserves_flags));
        }
    }
    x
}

/// Forward transform: standard order in, bit-reversed evaluations out, every word in [0, p).
/// `w[k]`, `ws[k]`: the twiddles in bit-reversed order and their Shoup constants ⌊w·2^64/p⌋.
#[inline(always)]
pub(super) fn fwd<const PIN: bool>(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    let n = data.len();
    let two_p = 2 * p;
    let (mut t, mut m) = (n, 1);
    while m < n {
        t >>= 1;
        for (i, block) in data.chunks_exact_mut(2 * t).enumerate() {
            let (wi, wsi) = (w[m + i], ws[m + i]);
            let (xs, ys) = block.split_at_mut(t);
            for (x, y) in xs.iter_mut().zip(ys.iter_mut()) {
                // x ∈ [0, 4p) → [0, 2p); y·w lazily in [0, 2p)
                let a = (*x).min(x.wrapping_sub(two_p));
                let q = scalar::<PIN>(((*y as u128 * wsi as u128) >> 64) as u64);
                let v = y.wrapping_mul(wi).wrapping_sub(q.wrapping_mul(p));
                *x = a + v;
                *y = a + two_p - v;
            }
        }
        m <<= 1;
    }
    for x in data.iter_mut() {
        let a = (*x).min(x.wrapping_sub(two_p));
        *x = a.min(a.wrapping_sub(p));
    }
}

/// Inverse transform without the division by N: bit-reversed evaluations in, standard order
/// out, every word in [0, p). `w`, `ws`: the inverse twiddles in bit-reversed order.
#[inline(always)]
pub(super) fn inv<const PIN: bool>(data: &mut [u64], p: u64, w: &[u64], ws: &[u64]) {
    let n = data.len();
    let two_p = 2 * p;
    let (mut t, mut m) = (1, n >> 1);
    while m >= 1 {
        for (i, block) in data.chunks_exact_mut(2 * t).enumerate() {
            let (wi, wsi) = (w[m + i], ws[m + i]);
            let (xs, ys) = block.split_at_mut(t);
            for (x, y) in xs.iter_mut().zip(ys.iter_mut()) {
                // u, v ∈ [0, 2p): the sum back below 2p, the difference (in (0, 4p)) times w
                let (u, v) = (*x, *y);
                let s = u + v;
                *x = s.min(s.wrapping_sub(two_p));
                let d = u + two_p - v;
                let q = scalar::<PIN>(((d as u128 * wsi as u128) >> 64) as u64);
                *y = d.wrapping_mul(wi).wrapping_sub(q.wrapping_mul(p));
            }
        }
        t <<= 1;
        m >>= 1;
    }
    for x in data.iter_mut() {
        *x = (*x).min(x.wrapping_sub(p));
    }
}
