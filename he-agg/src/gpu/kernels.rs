//! The CUDA C source of the CKKS kernels, compiled by NVRTC at run time for the device found.
//! Each kernel is one [`super::exec::Exec`] primitive; [`super::host`] is the same arithmetic in
//! Rust. Every word leaves a kernel fully reduced, so both agree word for word.
//!
//! Moduli are below 2^62: sums of two residues never wrap, and 15 products of two residues fit a
//! 128-bit accumulator. `mods` holds `[q, ⌊2^128/q⌋ low, high]` per ring modulus.

/// Threads per block of the element-wise kernels.
pub const BLOCK: u32 = 256;
/// Threads per block of the shared-memory NTT (one block transforms one limb).
pub const NTT_BLOCK: u32 = 512;

pub const NTT_FWD: &str = "heal_ntt_fwd";
pub const NTT_INV: &str = "heal_ntt_inv";
pub const NTT_FWD_SPLIT: &str = "heal_ntt_fwd_split";
pub const NTT_INV_SPLIT: &str = "heal_ntt_inv_split";
/// Words one block of the split NTT holds (`SPLIT_WORDS` in the source); N must be a multiple.
pub const SPLIT_WORDS: usize = 512;
/// Threads per block of the split NTT.
pub const SPLIT_BLOCK: u32 = 256;
pub const MAP: &str = "heal_map";
pub const EXTEND: &str = "heal_extend";
pub const DOT: &str = "heal_dot";
pub const PERMUTE: &str = "heal_permute";
pub const TENSOR: &str = "heal_tensor";
pub const MAC: &str = "heal_mac";
pub const GROUP: &str = "heal_group";
/// Pairs one multiply-accumulate launch takes by value (`MAC_PAIRS` in the source).
pub const MAC_PAIRS: usize = 32;

pub const ALL: [&str; 11] = [
    NTT_FWD,
    NTT_INV,
    NTT_FWD_SPLIT,
    NTT_INV_SPLIT,
    MAP,
    EXTEND,
    DOT,
    PERMUTE,
    TENSOR,
    MAC,
    GROUP,
];

pub const SOURCE: &str = r#"
typedef unsigned long long u64;
typedef unsigned int u32;

__device__ __forceinline__ u64 csub(u64 r, u64 q) { return r >= q ? r - q : r; }
__device__ __forceinline__ u64 addm(u64 a, u64 b, u64 q) { return csub(a + b, q); }
__device__ __forceinline__ u64 subm(u64 a, u64 b, u64 q) { return a >= b ? a - b : a + q - b; }
// a·w mod q with w's Shoup companion ws = ⌊w·2^64/q⌋
__device__ __forceinline__ u64 shoup(u64 a, u64 w, u64 ws, u64 q) {
    const u64 h = __umul64hi(a, ws);
    return csub(a * w - h * q, q);
}
// (hi·2^64 + lo) mod q: Barrett with ⌊2^128/q⌋, the estimate at most one short (as the CPU's
// Modulus::reduce_u128)
__device__ __forceinline__ u64 reduce128(u64 lo, u64 hi, const u64* m) {
    const u64 q = m[0], rl = m[1], rh = m[2];
    const u64 lo_lo_hi = __umul64hi(lo, rl);
    const u64 lohi_lo = lo * rh, lohi_hi = __umul64hi(lo, rh);
    const u64 hilo_lo = hi * rl, hilo_hi = __umul64hi(hi, rl);
    const u64 mid_lo = lohi_lo + lo_lo_hi;
    const u64 mid_hi = lohi_hi + (mid_lo < lo_lo_hi ? 1ull : 0ull);
    const u64 mid2_lo = mid_lo + hilo_lo;
    const u64 c2 = mid2_lo < mid_lo ? 1ull : 0ull;
    const u64 qhat = hi * rh + mid_hi + hilo_hi + c2;
    return csub(lo - qhat * q, q);
}
__device__ __forceinline__ void mac(u64& lo, u64& hi, u64 a, u64 b) {
    const u64 pl = a * b, ph = __umul64hi(a, b);
    lo += pl;
    hi += ph + (lo < pl ? 1ull : 0ull);
}

// One block per job (limb, modulus): the whole transform in shared memory.
extern "C" __global__ void heal_ntt_fwd(u64* buf, const u32* jobs, const u64* tw,
                                        const u64* mods, u32 log_n) {
    extern __shared__ u64 s[];
    const u32 n = 1u << log_n;
    const u32 mi = jobs[2 * blockIdx.x + 1];
    u64* a = buf + ((u64)jobs[2 * blockIdx.x] << log_n);
    const u64 q = mods[3 * mi];
    const u64* w = tw + ((u64)mi << (log_n + 1));
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) s[i] = a[i];
    __syncthreads();
    for (u32 st = 0; st < log_n; ++st) {
        const u32 log_t = log_n - 1 - st, t = 1u << log_t, groups = 1u << st;
        for (u32 b = threadIdx.x; b < n / 2; b += blockDim.x) {
            const u32 i = b >> log_t, j = (i << (log_t + 1)) | (b & (t - 1)), k = groups + i;
            const u64 u = s[j], v = shoup(s[j + t], w[2 * k], w[2 * k + 1], q);
            s[j] = addm(u, v, q);
            s[j + t] = subm(u, v, q);
        }
        __syncthreads();
    }
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) a[i] = s[i];
}

extern "C" __global__ void heal_ntt_inv(u64* buf, const u32* jobs, const u64* tw,
                                        const u64* mods, const u64* ninv, u32 log_n,
                                        u32 normalize) {
    extern __shared__ u64 s[];
    const u32 n = 1u << log_n;
    const u32 mi = jobs[2 * blockIdx.x + 1];
    u64* a = buf + ((u64)jobs[2 * blockIdx.x] << log_n);
    const u64 q = mods[3 * mi];
    const u64* w = tw + ((u64)mi << (log_n + 1));
    for (u32 i = threadIdx.x; i < n; i += blockDim.x) s[i] = a[i];
    __syncthreads();
    for (u32 st = 0; st < log_n; ++st) {
        const u32 t = 1u << st, groups = n >> (st + 1);
        for (u32 b = threadIdx.x; b < n / 2; b += blockDim.x) {
            const u32 i = b >> st, j = (i << (st + 1)) | (b & (t - 1)), k = groups + i;
            const u64 u = s[j], v = s[j + t];
            s[j] = addm(u, v, q);
            s[j + t] = shoup(subm(u, v, q), w[2 * k], w[2 * k + 1], q);
        }
        __syncthreads();
    }
    const u64 c = ninv[2 * mi], cs = ninv[2 * mi + 1];
    for (u32 i = threadIdx.x; i < n; i += blockDim.x)
        a[i] = normalize ? shoup(s[i], c, cs, q) : s[i];
}

// The transform in two launches over many blocks per limb (for small batches, where one block
// per limb would leave most multiprocessors idle). With N = M·T, the first log M forward stages
// (t ≥ T) only pair words of equal index mod T: T independent columns of M words (stride T). The
// remaining stages (t < T) stay inside aligned rows of T words. The inverse runs rows first.
// Each block holds SPLIT_WORDS words in shared memory: SPLIT_WORDS/M columns or SPLIT_WORDS/T rows.
#define SPLIT_WORDS 512u

// phase 0: columns (forward stages 0..log M); phase 1: rows (the rest)
extern "C" __global__ void heal_ntt_fwd_split(u64* buf, const u32* jobs, const u64* tw,
                                              const u64* mods, u32 log_n, u32 log_m, u32 phase) {
    __shared__ u64 s[SPLIT_WORDS];
    const u32 n = 1u << log_n, log_t = log_n - log_m, per_job = n / SPLIT_WORDS;
    const u32 job = blockIdx.x / per_job, blk = blockIdx.x % per_job;
    const u32 mi = jobs[2 * job + 1];
    u64* a = buf + ((u64)jobs[2 * job] << log_n);
    const u64 q = mods[3 * mi];
    const u64* w = tw + ((u64)mi << (log_n + 1));
    if (phase == 0) {
        const u32 m = 1u << log_m, cols = SPLIT_WORDS >> log_m, c0 = blk * cols;
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) {
            const u32 cl = e % cols, r = e / cols;
            s[cl * m + r] = a[((u64)r << log_t) + c0 + cl];
        }
        __syncthreads();
        for (u32 st = 0; st < log_m; ++st) {
            const u32 lt = log_m - 1 - st, t = 1u << lt, groups = 1u << st;
            for (u32 b = threadIdx.x; b < SPLIT_WORDS / 2; b += blockDim.x) {
                const u32 cl = b >> (log_m - 1), bl = b & ((m >> 1) - 1);
                const u32 i = bl >> lt, r = (i << (lt + 1)) | (bl & (t - 1)), k = groups + i;
                u64* x = s + cl * m;
                const u64 u = x[r], v = shoup(x[r + t], w[2 * k], w[2 * k + 1], q);
                x[r] = addm(u, v, q);
                x[r + t] = subm(u, v, q);
            }
            __syncthreads();
        }
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) {
            const u32 cl = e % cols, r = e / cols;
            a[((u64)r << log_t) + c0 + cl] = s[cl * m + r];
        }
    } else {
        u64* row = a + (u64)blk * SPLIT_WORDS;
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) s[e] = row[e];
        __syncthreads();
        const u32 base = blk * (SPLIT_WORDS / 2);
        for (u32 st = log_m; st < log_n; ++st) {
            const u32 lt = log_n - 1 - st, t = 1u << lt, groups = 1u << st;
            for (u32 bl = threadIdx.x; bl < SPLIT_WORDS / 2; bl += blockDim.x) {
                const u32 b = base + bl;
                const u32 i = b >> lt, j = ((i << (lt + 1)) | (b & (t - 1))) - blk * SPLIT_WORDS;
                const u32 k = groups + i;
                const u64 u = s[j], v = shoup(s[j + t], w[2 * k], w[2 * k + 1], q);
                s[j] = addm(u, v, q);
                s[j + t] = subm(u, v, q);
            }
            __syncthreads();
        }
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) row[e] = s[e];
    }
}

// phase 0: rows (inverse stages 0..log T); phase 1: columns (the rest, then N^-1 if asked)
extern "C" __global__ void heal_ntt_inv_split(u64* buf, const u32* jobs, const u64* tw,
                                              const u64* mods, const u64* ninv, u32 log_n,
                                              u32 log_m, u32 phase, u32 normalize) {
    __shared__ u64 s[SPLIT_WORDS];
    const u32 n = 1u << log_n, log_t = log_n - log_m, per_job = n / SPLIT_WORDS;
    const u32 job = blockIdx.x / per_job, blk = blockIdx.x % per_job;
    const u32 mi = jobs[2 * job + 1];
    u64* a = buf + ((u64)jobs[2 * job] << log_n);
    const u64 q = mods[3 * mi];
    const u64* w = tw + ((u64)mi << (log_n + 1));
    if (phase == 0) {
        u64* row = a + (u64)blk * SPLIT_WORDS;
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) s[e] = row[e];
        __syncthreads();
        const u32 base = blk * (SPLIT_WORDS / 2);
        for (u32 st = 0; st < log_t; ++st) {
            const u32 t = 1u << st, groups = n >> (st + 1);
            for (u32 bl = threadIdx.x; bl < SPLIT_WORDS / 2; bl += blockDim.x) {
                const u32 b = base + bl;
                const u32 i = b >> st, j = ((i << (st + 1)) | (b & (t - 1))) - blk * SPLIT_WORDS;
                const u32 k = groups + i;
                const u64 u = s[j], v = s[j + t];
                s[j] = addm(u, v, q);
                s[j + t] = shoup(subm(u, v, q), w[2 * k], w[2 * k + 1], q);
            }
            __syncthreads();
        }
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) row[e] = s[e];
    } else {
        const u32 m = 1u << log_m, cols = SPLIT_WORDS >> log_m, c0 = blk * cols;
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) {
            const u32 cl = e % cols, r = e / cols;
            s[cl * m + r] = a[((u64)r << log_t) + c0 + cl];
        }
        __syncthreads();
        for (u32 sl = 0; sl < log_m; ++sl) {
            const u32 t = 1u << sl, groups = n >> (log_t + sl + 1);
            for (u32 b = threadIdx.x; b < SPLIT_WORDS / 2; b += blockDim.x) {
                const u32 cl = b >> (log_m - 1), bl = b & ((m >> 1) - 1);
                const u32 i = bl >> sl, r = (i << (sl + 1)) | (bl & (t - 1)), k = groups + i;
                u64* x = s + cl * m;
                const u64 u = x[r], v = x[r + t];
                x[r] = addm(u, v, q);
                x[r + t] = shoup(subm(u, v, q), w[2 * k], w[2 * k + 1], q);
            }
            __syncthreads();
        }
        const u64 c = ninv[2 * mi], cs = ninv[2 * mi + 1];
        for (u32 e = threadIdx.x; e < SPLIT_WORDS; e += blockDim.x) {
            const u32 cl = e % cols, r = e / cols;
            const u64 v = s[cl * m + r];
            a[((u64)r << log_t) + c0 + cl] = normalize ? shoup(v, c, cs, q) : v;
        }
    }
}

// grid (N / BLOCK, jobs): job = (dst limb, src limb, modulus, constant)
extern "C" __global__ void heal_map(u64* dst, const u64* src, const u32* jobs, const u64* consts,
                                    const u64* mods, u32 log_n, u32 op) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32* jb = jobs + 4 * blockIdx.y;
    const u64* m = mods + 3 * jb[2];
    const u64 q = m[0], c = consts[2 * jb[3]], cs = consts[2 * jb[3] + 1];
    const u64 a = src[((u64)jb[1] << log_n) + k];
    u64* d = dst + ((u64)jb[0] << log_n) + k;
    u64 r;
    switch (op) {
        case 0: r = a; break;
        case 1: r = shoup(a, c, cs, q); break;
        case 2: r = shoup(subm(a, *d, q), c, cs, q); break;
        case 3: r = addm(*d, a, q); break;
        case 4: r = addm(a, c, q); break;
        default: r = subm(reduce128(a, 0, m), c, q); break;
    }
    *d = r;
}

// grid (N / BLOCK, jobs): job = (dst limb, modulus, first source limb, count, row offset)
extern "C" __global__ void heal_extend(u64* dst, const u64* src, const u32* jobs,
                                       const u64* rows, const u64* mods, u32 log_n) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32* jb = jobs + 5 * blockIdx.y;
    const u64* m = mods + 3 * jb[1];
    const u64* row = rows + jb[4];
    const u64* x = src + ((u64)jb[2] << log_n) + k;
    u64 lo = 0, hi = 0;
    for (u32 i = 0; i < jb[3]; ++i) {
        mac(lo, hi, x[(u64)i << log_n], row[i]);
        if (i % 15 == 14) { lo = reduce128(lo, hi, m); hi = 0; }
    }
    dst[((u64)jb[0] << log_n) + k] = reduce128(lo, hi, m);
}

// grid (N / BLOCK, 2·width): out[c][pos] = Σ_j digits[j][pos]·key[j][c][qp[pos]]
extern "C" __global__ void heal_dot(u64* out, const u64* digits, const u64* key, const u32* qp,
                                    const u64* mods, u32 log_n, u32 ndig, u32 width,
                                    u32 key_limbs) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32 p = blockIdx.y, c = p / width, pos = p % width, idx = qp[pos];
    const u64* m = mods + 3 * idx;
    u64 lo = 0, hi = 0;
    for (u32 j = 0; j < ndig; ++j) {
        const u64 a = digits[((u64)(j * width + pos) << log_n) + k];
        const u64 b = key[((u64)((j * 2 + c) * key_limbs + idx) << log_n) + k];
        mac(lo, hi, a, b);
        if (j % 15 == 14) { lo = reduce128(lo, hi, m); hi = 0; }
    }
    out[((u64)p << log_n) + k] = reduce128(lo, hi, m);
}

// grid (N / BLOCK, 3·level): out = (a0·b0, a0·b1 + a1·b0, a1·b1), limb i modulo ring modulus i
extern "C" __global__ void heal_tensor(u64* out, const u64* a, const u64* b, const u64* mods,
                                       u32 log_n, u32 level) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32 which = blockIdx.y / level, i = blockIdx.y % level;
    const u64* m = mods + 3 * i;
    const u64 a0 = a[((u64)i << log_n) + k], a1 = a[((u64)(level + i) << log_n) + k];
    const u64 b0 = b[((u64)i << log_n) + k], b1 = b[((u64)(level + i) << log_n) + k];
    u64 lo = 0, hi = 0;
    if (which == 0) mac(lo, hi, a0, b0);
    else if (which == 1) { mac(lo, hi, a0, b1); mac(lo, hi, a1, b0); }
    else mac(lo, hi, a1, b1);
    out[((u64)blockIdx.y << log_n) + k] = reduce128(lo, hi, m);
}

// The pairs of one multiply-accumulate launch, passed by value (no upload per launch).
#define MAC_PAIRS 32
struct MacPairs { const u64* a[MAC_PAIRS]; const u64* b[MAC_PAIRS]; };

// grid (N / BLOCK, jobs): job = (dst limb, modulus, products, a limbs ×2, b limbs ×2);
// out[dst] (+)= Σ over the pairs (a[t], b[t]) of Σ_{p<products} a[t][a_p]·b[t][b_p]
// (acc: onto the reduced value already there — longer lists run in several launches)
extern "C" __global__ void heal_mac(u64* out, const MacPairs pp, u32 pairs, u32 acc,
                                    const u32* jobs, const u64* mods, u32 log_n) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32* jb = jobs + 7 * blockIdx.y;
    const u64* m = mods + 3 * jb[1];
    const u32 prods = jb[2];
    const u64 oa0 = ((u64)jb[3] << log_n) + k, oa1 = ((u64)jb[4] << log_n) + k;
    const u64 ob0 = ((u64)jb[5] << log_n) + k, ob1 = ((u64)jb[6] << log_n) + k;
    u64* o = out + ((u64)jb[0] << log_n) + k;
    u64 lo = acc ? *o : 0, hi = 0;
    u32 count = acc ? 1 : 0;
    for (u32 t = 0; t < pairs; ++t) {
        const u64* a = pp.a[t];
        const u64* b = pp.b[t];
        mac(lo, hi, a[oa0], b[ob0]);
        if (++count == 15) { lo = reduce128(lo, hi, m); hi = 0; count = 1; }
        if (prods == 2) {
            mac(lo, hi, a[oa1], b[ob1]);
            if (++count == 15) { lo = reduce128(lo, hi, m); hi = 0; count = 1; }
        }
    }
    *o = reduce128(lo, hi, m);
}

// grid (N / BLOCK, rows·parts·level): one group of a batched map; outs and xs are arrays of
// ciphertext pointers, weights [level][rows][ncols]
extern "C" __global__ void heal_group(u64* const* outs, const u64* const* xs, const u32* cols,
                                      const u64* weights, const u64* mods, u32 log_n,
                                      u32 rows, u32 ncols, u32 parts, u32 level, u32 acc) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32 y = blockIdx.y, i = y % level, p = (y / level) % parts, r = y / (level * parts);
    const u64* m = mods + 3 * i;
    const u64* w = weights + ((u64)i * rows + r) * ncols;
    const u64 off = ((u64)(p * level + i) << log_n) + k;
    u64* o = outs[r] + off;
    u64 lo = acc ? *o : 0, hi = 0;
    u32 count = acc ? 1 : 0;
    for (u32 e = 0; e < ncols; ++e) {
        mac(lo, hi, w[e], xs[cols[e]][off]);
        if (++count == 15) { lo = reduce128(lo, hi, m); hi = 0; count = 1; }
    }
    *o = reduce128(lo, hi, m);
}

// grid (N / BLOCK, jobs): dst[job.dst][i] (+)= src[job.src][map[i]] (add: modulo job.modulus)
extern "C" __global__ void heal_permute(u64* dst, const u64* src, const u32* jobs, const u32* map,
                                        const u64* mods, u32 log_n, u32 add) {
    const u32 k = blockIdx.x * blockDim.x + threadIdx.x;
    if (k >= (1u << log_n)) return;
    const u32* jb = jobs + 4 * blockIdx.y;
    const u64 v = src[((u64)jb[1] << log_n) + map[k]];
    u64* d = dst + ((u64)jb[0] << log_n) + k;
    *d = add ? addm(*d, v, mods[3 * jb[2]]) : v;
}
"#;
