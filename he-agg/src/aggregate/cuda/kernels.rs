//! The CUDA C source of the aggregation kernel, compiled at run time by NVRTC for the device's
//! compute capability (so one binary serves every GPU and the build needs no CUDA toolkit).
//! [`super::reference::fold`] is the same arithmetic in Rust; keep the two in step.

/// Name of the fused weighted-sum kernel in [`FOLD_SOURCE`].
pub const FOLD_KERNEL: &str = "heal_fold";

/// Threads per block: enough warps in flight per SM to hide DRAM latency on a streaming kernel.
pub const FOLD_BLOCK: u32 = 256;

/// `acc[t] ← acc[t] + Σ_j w_j·x_j[t] mod q_limb(t)` for the words `first..first + span` of the
/// accumulator, one thread per coefficient (grid-stride, so any grid size is correct).
///
/// - `acc` points at word `first`; `inputs` holds `count` runs of `span` words, input after input;
/// - `consts[2·(j·level + limb)]`, `consts[2·(j·level + limb) + 1]`: w_j mod q and its Shoup
///   companion ⌊w·2^64/q⌋, so each input word costs one `__umul64hi` and two low products;
/// - `moduli[limb]` < 2^62, so `sum + term` < 2^63 never wraps and one conditional subtraction
///   keeps the sum reduced (the CPU backend's final words are the same unique residues).
///
/// Inputs are read once: `__ldcs` (evict-first) keeps them from displacing the accumulator.
pub const FOLD_SOURCE: &str = r#"
typedef unsigned long long u64;

extern "C" __global__ void heal_fold(
    u64* __restrict__ acc,
    const u64* __restrict__ inputs,
    const u64* __restrict__ consts,
    const u64* __restrict__ moduli,
    unsigned int count,
    u64 first,
    u64 span,
    unsigned int log_n,
    unsigned int level)
{
    const u64 stride = (u64)gridDim.x * blockDim.x;
    for (u64 i = (u64)blockIdx.x * blockDim.x + threadIdx.x; i < span; i += stride) {
        const unsigned int limb = (unsigned int)(((first + i) >> log_n) % level);
        const u64 q = moduli[limb];
        const u64* c = consts + 2 * (u64)limb;
        u64 sum = acc[i];
        const u64* x = inputs + i;
#pragma unroll 4
        for (unsigned int j = 0; j < count; ++j) {
            const u64 v = __ldcs(x);
            const u64 w = c[0];
            const u64 w_shoup = c[1];
            const u64 qhat = __umul64hi(v, w_shoup);
            u64 term = v * w - qhat * q;
            term = term >= q ? term - q : term;
            sum += term;
            sum = sum >= q ? sum - q : sum;
            x += span;
            c += 2 * (u64)level;
        }
        acc[i] = sum;
    }
}
"#;
