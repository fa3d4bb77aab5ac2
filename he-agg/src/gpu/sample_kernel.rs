//! The CUDA C source of the seed-expanded samplers (appended to [`super::kernels::SOURCE`],
//! whose modular helpers it uses): ChaCha20 in the kernel, and the layouts and correctly rounded
//! Box–Muller of [`crate::ring::expand`], so the device makes the same samples as the CPU.
//!
//! Box–Muller uses only the `__*_rn` intrinsics and `__fma_rn`: NVRTC never fuses them (it would
//! fuse a plain `a * b + c`), so every rounding is the one the Rust code makes.

pub const SAMPLE: &str = "heal_sample";

/// `dist` codes of the kernel.
pub const TERNARY: u32 = 0;
pub const GAUSSIAN: u32 = 1;
pub const FLOODING: u32 = 2;

pub const SOURCE: &str = r#"
__device__ __forceinline__ u32 rotl32(u32 x, u32 r) { return (x << r) | (x >> (32u - r)); }
#define HEAL_QR(a, b, c, d)                                   \
    a += b; d ^= a; d = rotl32(d, 16); c += d; b ^= c; b = rotl32(b, 12); \
    a += b; d ^= a; d = rotl32(d, 8); c += d; b ^= c; b = rotl32(b, 7);

// Block `ctr` of ChaCha20 stream 0 under `key` (64-bit block counter in words 12-13, stream in
// 14-15, as rand's ChaCha20Rng), as eight little-endian 64-bit words.
__device__ __forceinline__ void chacha20_block(const u32* key, u64 ctr, u64* out) {
    u32 s[16] = {0x61707865u, 0x3320646eu, 0x79622d32u, 0x6b206574u,
                 key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7],
                 (u32)ctr, (u32)(ctr >> 32), 0u, 0u};
    u32 x[16];
#pragma unroll
    for (int i = 0; i < 16; ++i) x[i] = s[i];
#pragma unroll
    for (int r = 0; r < 10; ++r) {
        HEAL_QR(x[0], x[4], x[8], x[12]) HEAL_QR(x[1], x[5], x[9], x[13])
        HEAL_QR(x[2], x[6], x[10], x[14]) HEAL_QR(x[3], x[7], x[11], x[15])
        HEAL_QR(x[0], x[5], x[10], x[15]) HEAL_QR(x[1], x[6], x[11], x[12])
        HEAL_QR(x[2], x[7], x[8], x[13]) HEAL_QR(x[3], x[4], x[9], x[14])
    }
#pragma unroll
    for (int i = 0; i < 8; ++i)
        out[i] = (u64)(x[2 * i] + s[2 * i]) | ((u64)(x[2 * i + 1] + s[2 * i + 1]) << 32);
}

// Box–Muller constants (BoxMullerConstants::to_words): ln series, sin, cos, then scalars
#define BM_LN 0
#define BM_LN_TERMS 12
#define BM_SIN 12
#define BM_COS 22
#define BM_TRIG_TERMS 10
#define BM_LN2 32
#define BM_SQRT2 33
#define BM_HALF_PI 34
#define BM_TWO_M53 35

__device__ __forceinline__ double horner(const double* c, int k, double t) {
    double acc = 0.0;
    for (int i = k - 1; i >= 0; --i) acc = __fma_rn(acc, t, c[i]);
    return acc;
}

__device__ __forceinline__ double det_ln(double x, const double* bm) {
    const u64 bits = (u64)__double_as_longlong(x);
    long long e = (long long)((bits >> 52) & 0x7ffull) - 1023;
    double m = __longlong_as_double((long long)((bits & ((1ull << 52) - 1)) | (1023ull << 52)));
    if (m > bm[BM_SQRT2]) { m = __dmul_rn(m, 0.5); e += 1; }
    const double f = __ddiv_rn(__dsub_rn(m, 1.0), __dadd_rn(m, 1.0));
    const double lnm = __dmul_rn(__dmul_rn(2.0, f), horner(bm + BM_LN, BM_LN_TERMS, __dmul_rn(f, f)));
    return __fma_rn((double)e, bm[BM_LN2], lnm);
}

__device__ __forceinline__ void det_sincos_turns(double u, const double* bm, double* sp, double* cp) {
    const double v = __dmul_rn(u, 4.0);
    const u32 q = (u32)v;
    double r = __dsub_rn(v, (double)q);
    const bool swap = r > 0.5;
    if (swap) r = __dsub_rn(1.0, r);
    const double th = __dmul_rn(r, bm[BM_HALF_PI]);
    const double t = __dmul_rn(th, th);
    double s = __dmul_rn(th, horner(bm + BM_SIN, BM_TRIG_TERMS, t));
    double c = horner(bm + BM_COS, BM_TRIG_TERMS, t);
    if (swap) { const double x = s; s = c; c = x; }
    if (q == 0) { *sp = s; *cp = c; }
    else if (q == 1) { *sp = c; *cp = -s; }
    else if (q == 2) { *sp = -s; *cp = -c; }
    else { *sp = -c; *cp = s; }
}

// round(z) plus the fine part of word fw, as a sign and a 128-bit magnitude
__device__ __forceinline__ void flood_value(double z, u64 fw, u32 fine_bits, u64* lo, u64* hi,
                                            bool* neg) {
    const u64 bits = (u64)__double_as_longlong(round(z));
    const int ex = (int)((bits >> 52) & 0x7ffull);
    u64 ml = 0, mh = 0;
    if (ex != 0) {
        const u64 mant = (bits & ((1ull << 52) - 1)) | (1ull << 52);
        const int sh = ex - 1075;
        if (sh >= 64) { mh = mant << (sh - 64); }
        else if (sh > 0) { ml = mant << sh; mh = mant >> (64 - sh); }
        else if (sh == 0) { ml = mant; }
        else if (sh > -64) { ml = mant >> (-sh); }
    }
    if (bits >> 63) { ml = ~ml + 1; mh = ~mh + (ml == 0 ? 1ull : 0ull); }
    long long f = 0;
    if (fine_bits) f = (long long)(fw >> (64 - fine_bits)) - (1ll << (fine_bits - 1));
    const u64 fl = (u64)f, fh = f < 0 ? ~0ull : 0ull;
    const u64 sl = ml + fl;
    const u64 sh2 = mh + fh + (sl < ml ? 1ull : 0ull);
    *neg = (sh2 >> 63) != 0;
    if (*neg) { *lo = ~sl + 1; *hi = ~sh2 + (*lo == 0 ? 1ull : 0ull); }
    else { *lo = sl; *hi = sh2; }
}

// One thread per ChaCha20 block of one seed: 8 coefficients (dist 0 ternary, 1 Gaussian) or 4
// (dist 2 flooding), written to limb first + seed·level + i modulo ring modulus moduli[i].
extern "C" __global__ void heal_sample(u64* dst, u32 first, const u32* seeds, u32 nseeds, u32 dist,
                                       const u32* moduli, u32 level, const u64* mods,
                                       const u64* cdt, u32 cdt_len, const double* bm,
                                       double sigma, u32 fine_bits, u32 log_n) {
    const u32 per = dist == 2 ? 4u : 8u;
    const u32 blocks = (1u << log_n) / per;
    const u64 t = (u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (u64)nseeds * blocks) return;
    const u32 seed = (u32)(t / blocks), blk = (u32)(t % blocks);
    u64 w[8];
    chacha20_block(seeds + 8 * seed, blk, w);
    u64 lo[8], hi[8];
    bool neg[8];
    if (dist == 0) {
        for (int c = 0; c < 8; ++c) {
            const u64 v = __umul64hi(w[c], 3ull);
            neg[c] = v == 0; lo[c] = v == 0 ? 1ull : v - 1; hi[c] = 0;
        }
    } else if (dist == 1) {
        for (int c = 0; c < 8; ++c) {
            int k = 0;
            for (u32 j = 0; j < cdt_len; ++j) k += cdt[j] <= w[c] ? 1 : 0;
            const int v = k - (int)(cdt_len / 2);
            neg[c] = v < 0; lo[c] = (u64)(v < 0 ? -v : v); hi[c] = 0;
        }
    } else {
        for (int p = 0; p < 2; ++p) {
            const double u1 = __dmul_rn((double)((w[4 * p] >> 11) + 1), bm[BM_TWO_M53]);
            const double u2 = __dmul_rn((double)(w[4 * p + 1] >> 11), bm[BM_TWO_M53]);
            const double r = __dmul_rn(__dsqrt_rn(__dmul_rn(-2.0, det_ln(u1, bm))), sigma);
            double s, c;
            det_sincos_turns(u2, bm, &s, &c);
            flood_value(__dmul_rn(r, c), w[4 * p + 2], fine_bits, &lo[2 * p], &hi[2 * p], &neg[2 * p]);
            flood_value(__dmul_rn(r, s), w[4 * p + 3], fine_bits, &lo[2 * p + 1], &hi[2 * p + 1],
                        &neg[2 * p + 1]);
        }
    }
    for (u32 i = 0; i < level; ++i) {
        const u64* m = mods + 3 * moduli[i];
        const u64 q = m[0];
        u64* out = dst + ((u64)(first + seed * level + i) << log_n) + (u64)blk * per;
        for (u32 c = 0; c < per; ++c) {
            const u64 r = (hi[c] == 0 && lo[c] < q) ? lo[c] : reduce128(lo[c], hi[c], m);
            out[c] = (neg[c] && r != 0) ? q - r : r;
        }
    }
}
"#;
