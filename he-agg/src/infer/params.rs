//! CKKS parameters from a network's multiplicative depth: the smallest ring (hence the fastest
//! operations) whose 128-bit-secure modulus budget holds the chain, then the largest scale up to
//! the policy's cap, then the fewest key-switching digits.
//!
//! Chain: q_0 of `scale + output_bits + 1` bits (the last level holds outputs below
//! 2^output_bits), then `depth` primes of `scale` bits (each rescale divides by about the
//! scale, so the scale stays put), then special primes P at least as large as the biggest
//! key-switching digit. Every candidate goes through [`Parameters::new`], which enforces the
//! HomomorphicEncryption.org table.

use crate::ckks::{CkksError, Parameters};
use crate::rlwe::{ParamsError, max_log_qp_128};

use super::error::InferError;

/// Largest prime size used (the ring accepts below 2^62; 60 leaves lazy-reduction room).
pub const MAX_PRIME_BITS: u32 = 60;

/// Largest prime the fast kernels take: below 2^51, products run on AVX-512 IFMA or in double
/// precision (AVX2) — NTTs, diagonal products and the batched maps alike — and above it on
/// 64-bit scalar code several times slower (a plan's 59-bit base limbs were most of a deep
/// network's product time).
pub const FAST_PRIME_BITS: u32 = 51;

/// Room a mode (a) plan's base keeps for the keyholders' collective refresh: each keyholder's
/// mask is [`crate::multiparty::refresh::MASK_SECURITY`] bits above the message, and up to 2^7
/// keyholders' masks add up (one more bit for the sum's sign).
pub const COLLECTIVE_REFRESH_BITS: u32 = crate::multiparty::refresh::MASK_SECURITY + 8;

/// What the parameter choice aims at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParamPolicy {
    /// The smallest scale accepted (precision of every fixed-point value, in bits).
    pub min_scale_bits: u32,
    /// The scale is not raised beyond this even where the modulus budget allows.
    pub max_scale_bits: u32,
    /// Outputs (and the values of the last level) stay below 2^output_bits in magnitude.
    pub output_bits: u32,
    /// Smallest ring degree tried (log2).
    pub min_log_n: u32,
    /// Largest ring degree tried (log2); the HE standard's table stops at 2^15.
    pub max_log_n: u32,
    /// Bits kept below the outputs for the flooding noise of a threshold key switch (mode a):
    /// the result stays at a level whose modulus holds outputs, flooding and this much more.
    /// 0 for a result the requester decrypts itself (mode b).
    pub switch_room_bits: u32,
    /// Primes each rescale divides by (1: one prime per level). Two let the scale exceed one
    /// prime's 60 bits, so that a threshold switch's flooding can sit 2^λ above the
    /// evaluation's own noise and still below the logits' precision (mode a).
    pub step_primes: u32,
    /// Whether a network deeper than the ring holds may be cut into segments with a refresh of
    /// its ciphertext between them (the requester's in mode b, t keyholders' in mode a): the
    /// base then keeps `refresh_room_bits` of room for the refresh's masks.
    pub refresh: bool,
    /// Bits a cut plan's base keeps above its outputs for a refresh's masks: the requester's
    /// (mode b, [`super::refresh::MASK_BITS`] + 1) or the keyholders' ([`COLLECTIVE_REFRESH_BITS`]).
    pub refresh_room_bits: u32,
    /// A cut network's segments hold at least this many levels (or the whole network): below,
    /// the next ring is tried, trading slower operations for fewer round trips.
    pub min_segment_depth: u32,
    /// A cut network's parameters have at most this many key-switching digits: each Galois key
    /// holds digits × (levels + special primes) limbs, so the deepest segments (one digit per
    /// prime) would make keys of hundreds of MB.
    pub max_refresh_digits: u32,
    /// A cut network's scale is at least 2^this: its many rotations each add key-switching
    /// noise of about 10^3 per coefficient, 10^-4 in the slots at 2^30 and 10^-7 at 2^40.
    pub min_refresh_scale_bits: u32,
    /// Primes of a cut network's chain and special modulus have at most this many bits. 60
    /// for one image per ciphertext (fewer, larger limbs: 4.32 s per BreastMNIST ResNet image
    /// against 4.81 s with every prime below 2^51). The batched packing's cap is the smaller of
    /// this and `batched_prime_bits`.
    pub refresh_prime_bits: u32,
    /// Primes of any plan have at most this many bits (60; a cut plan's, the smaller of this
    /// and `refresh_prime_bits`).
    pub max_prime_bits: u32,
    /// Primes of a cut batched plan have at most this many bits: [`FAST_PRIME_BITS`] (the
    /// fastest per limb), or 60 for fewer limbs where memory is short (a batch holds one
    /// ciphertext per value: a BreastMNIST ResNet batch takes 8 limbs at the top with 51-bit
    /// primes, 6 with 60-bit ones).
    pub batched_prime_bits: u32,
}

impl Default for ParamPolicy {
    fn default() -> Self {
        Self {
            // 2^30 and above keeps the logits' error near 1e-5 (N = 2^14 for the default
            // network); 2^25..2^28 fits depth 5 in N = 2^13 at about 1e-3, TenSEAL's class
            min_scale_bits: 30,
            max_scale_bits: 40,
            output_bits: 10,
            min_log_n: 12,
            max_log_n: 15,
            switch_room_bits: 0,
            step_primes: 1,
            refresh: true,
            refresh_room_bits: super::refresh::MASK_BITS + 1,
            min_segment_depth: 4,
            max_refresh_digits: 3,
            min_refresh_scale_bits: 36,
            refresh_prime_bits: MAX_PRIME_BITS,
            max_prime_bits: MAX_PRIME_BITS,
            batched_prime_bits: FAST_PRIME_BITS,
        }
    }
}

impl ParamPolicy {
    fn check(&self) -> Result<(), InferError> {
        if !(1..=3).contains(&self.step_primes) {
            return Err(InferError::Policy("step_primes must be 1, 2 or 3"));
        }
        if !(30..=MAX_PRIME_BITS).contains(&self.max_prime_bits)
            || !(30..=MAX_PRIME_BITS).contains(&self.refresh_prime_bits)
            || !(30..=MAX_PRIME_BITS).contains(&self.batched_prime_bits)
        {
            return Err(InferError::Policy("prime sizes must be 30 to 60 bits"));
        }
        if self.min_scale_bits < 20 * self.step_primes
            || self.max_scale_bits < self.min_scale_bits
            || self.max_scale_bits > self.max_prime_bits * self.step_primes
        {
            return Err(InferError::Policy(
                "scale bits must satisfy 20·step_primes ≤ min ≤ max ≤ max_prime_bits·step_primes",
            ));
        }
        if self.output_bits > 30 {
            return Err(InferError::Policy("output_bits must be at most 30"));
        }
        if self.refresh_room_bits > 240 {
            return Err(InferError::Policy("refresh_room_bits must be at most 240"));
        }
        if self.switch_room_bits > 240 {
            return Err(InferError::Policy("switch_room_bits must be at most 240"));
        }
        if !(10..=15).contains(&self.min_log_n) || !(self.min_log_n..=15).contains(&self.max_log_n)
        {
            return Err(InferError::Policy("log N must satisfy 10 ≤ min ≤ max ≤ 15"));
        }
        Ok(())
    }

    /// The policy for a model served encrypted (mode a): the threshold key switch of the result
    /// adds flooding noise 2^λ above the noise the evaluation leaves in the result, which
    /// reaches the logits divided by the scale. That noise is ≈ 2^28 per coefficient for the
    /// default network with 5 hospitals' keys whatever the scale (it comes from the collective
    /// keys' key switching; measured by [`super::calibrate`]), so 2^34 above it needs a scale
    /// beyond one prime: two primes per rescale, 80 to 90 bits (switching error per logit
    /// ≈ 1e-3 at 80, 1.5e-6 at 90). The result keeps `room_bits` below the logits.
    pub fn threshold_switched(room_bits: u32) -> Self {
        Self {
            min_scale_bits: 80,
            max_scale_bits: 90,
            switch_room_bits: room_bits,
            step_primes: 2,
            // a deeper network is cut; t keyholders refresh between segments
            refresh_room_bits: COLLECTIVE_REFRESH_BITS,
            ..Self::default()
        }
    }

    /// Prime sizes of the base (the levels left under the outputs): outputs, sign and switching
    /// room, in as few primes of at most 60 bits as hold them.
    fn base_bits(&self, s: u32) -> Vec<u32> {
        self.base_bits_with(s, 0)
    }

    /// The base with `extra` bits more (a refresh's mask).
    pub(crate) fn base_bits_with(&self, s: u32, extra: u32) -> Vec<u32> {
        let total = s + self.output_bits + 1 + self.switch_room_bits + extra;
        let count = total.div_ceil(self.max_prime_bits);
        let each = total.div_ceil(count).max(20);
        vec![each; count as usize]
    }

    /// Prime sizes of one rescale's primes: `step_primes` primes whose product is about 2^s.
    fn step_bits(&self, s: u32) -> Vec<u32> {
        let k = self.step_primes.max(1);
        (0..k).map(|i| s / k + u32::from(i < s % k)).collect()
    }

    /// Prime sizes of the ciphertext chain for `depth` rescales at scale 2^s.
    fn q_bits(&self, depth: usize, s: u32) -> Vec<u32> {
        self.q_bits_with(depth, s, 0)
    }

    /// The chain with `extra` bits more in its base.
    pub(crate) fn q_bits_with(&self, depth: usize, s: u32, extra: u32) -> Vec<u32> {
        let step = self.step_bits(s);
        let mut q = self.base_bits_with(s, extra);
        for _ in 0..depth {
            q.extend_from_slice(&step);
        }
        q
    }
}

/// Special-prime sizes (at most `max_bits` each) covering the largest digit when the chain is
/// cut into `dnum` digits.
fn p_bits(q_bits: &[u32], dnum: usize, max_bits: u32) -> Vec<u32> {
    let l = q_bits.len();
    let mut start = 0;
    let largest = (0..dnum)
        .map(|j| {
            let len = l / dnum + usize::from(j < l % dnum);
            start += len;
            q_bits[start - len..start].iter().sum::<u32>()
        })
        .max()
        .unwrap_or(0);
    let count = largest.div_ceil(max_bits).max(1);
    let each = largest.div_ceil(count);
    vec![each; count as usize]
}

/// Nominal log2(QP) of a candidate (primes of b bits lie just below 2^b).
fn nominal_bits(q: &[u32], p: &[u32]) -> u32 {
    q.iter().chain(p).sum()
}

/// The smallest secure parameters for `depth` rescalings and at least `min_slots` slots.
pub fn choose_parameters(
    depth: usize,
    min_slots: usize,
    policy: &ParamPolicy,
) -> Result<Parameters, InferError> {
    policy.check()?;
    check_slots(min_slots, policy)?;
    let min_log_n = policy
        .min_log_n
        .max(min_slots.max(1).next_power_of_two().trailing_zeros() + 1);
    for log_n in min_log_n..=policy.max_log_n {
        if let Some(params) = try_ring(log_n, depth, policy)? {
            return Ok(params);
        }
    }
    Err(InferError::TooDeep {
        depth,
        max_depth: max_depth(policy),
        min_scale_bits: policy.min_scale_bits,
    })
}

/// Refuses more slots than the policy's largest ring gives.
pub(crate) fn check_slots(min_slots: usize, policy: &ParamPolicy) -> Result<(), InferError> {
    let max_slots = 1usize << (policy.max_log_n - 1);
    if min_slots > max_slots {
        return Err(InferError::TooWide {
            needed: min_slots,
            max: max_slots,
        });
    }
    Ok(())
}

/// The best parameters with ring degree 2^log_n, if any hold `depth`.
pub(crate) fn try_ring(
    log_n: u32,
    depth: usize,
    policy: &ParamPolicy,
) -> Result<Option<Parameters>, InferError> {
    for s in (policy.min_scale_bits..=policy.max_scale_bits).rev() {
        if let Some(p) = try_chain(log_n, &policy.q_bits(depth, s), s)? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Parameters of ring 2^log_n for the chain `q` at scale 2^s, with the fewest key-switching
/// digits that fit the 128-bit budget; `None` when none does.
pub(crate) fn try_chain(log_n: u32, q: &[u32], s: u32) -> Result<Option<Parameters>, InferError> {
    try_chain_digits(log_n, q, s, q.len(), MAX_PRIME_BITS)
}

/// [`try_chain`] with at most `max_digits` key-switching digits and special primes of at most
/// `max_bits` bits.
pub(crate) fn try_chain_digits(
    log_n: u32,
    q: &[u32],
    s: u32,
    max_digits: usize,
    max_bits: u32,
) -> Result<Option<Parameters>, InferError> {
    let bound = max_log_qp_128(log_n).expect("10 ≤ log N ≤ 15 is in the table") as u32;
    {
        let q = q.to_vec();
        // fewest digits first: fewer basis extensions per key switch
        for dnum in 1..=q.len().min(max_digits) {
            let p = p_bits(&q, dnum, max_bits);
            if nominal_bits(&q, &p) > bound {
                continue;
            }
            match Parameters::new(log_n, &q, &p, dnum, s as f64) {
                Ok(params) => return Ok(Some(params)),
                // not enough primes of that size for this ring, or the real sizes came out
                // over the bound: try the next candidate
                Err(CkksError::Params(
                    ParamsError::PrimeGeneration { .. }
                    | ParamsError::Insecure { .. }
                    | ParamsError::SpecialModulusTooSmall { .. },
                )) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(None)
}

/// Whether a chain could fit ring 2^log_n at all (one digit per prime, the least special
/// modulus): a cheap bound before primes are generated.
pub(crate) fn may_fit(log_n: u32, q: &[u32]) -> bool {
    let bound = max_log_qp_128(log_n).expect("10 ≤ log N ≤ 15 is in the table") as u32;
    let largest = q.iter().copied().max().unwrap_or(0);
    q.iter().sum::<u32>() + largest <= bound
}

/// The deepest network the policy's largest ring holds: the budget bound (one digit per prime,
/// the least special-modulus overhead, smallest scale), lowered while primes run short.
pub fn max_depth(policy: &ParamPolicy) -> usize {
    let Some(bound) = max_log_qp_128(policy.max_log_n) else {
        return 0;
    };
    let s = policy.min_scale_bits;
    let base: u32 = policy.base_bits(s).iter().sum();
    let mut depth = (bound as u32).saturating_sub(2 * base.max(s)) as usize / s as usize;
    while depth > 0 && !matches!(try_ring(policy.max_log_n, depth, policy), Ok(Some(_))) {
        depth -= 1;
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_network_depth_fits_the_smallest_ring_that_holds_its_slots() {
        let fast = ParamPolicy {
            min_scale_bits: 25,
            ..ParamPolicy::default()
        };
        let p = choose_parameters(5, 4096, &fast).unwrap();
        assert_eq!(p.n(), 8192);
        assert_eq!(p.max_level(), 6);
        assert!(!p.rlwe().is_insecure());
        assert!(p.rlwe().log_qp() <= 218.0);
        assert!(p.log_scale() >= 25.0);
        // the default policy's precision needs the next ring for the same network
        let p = choose_parameters(5, 4096, &ParamPolicy::default()).unwrap();
        assert_eq!((p.n(), p.log_scale(), p.max_level()), (16384, 40.0, 6));
        // more slots or more depth move to a larger ring, with the scale capped at 40 bits
        let p = choose_parameters(5, 8192, &ParamPolicy::default()).unwrap();
        assert_eq!((p.n(), p.log_scale()), (16384, 40.0));
        let p = choose_parameters(12, 16, &ParamPolicy::default()).unwrap();
        assert!(p.n() >= 16384 && p.max_level() == 13);
        // a shallow network gets a small ring
        let p = choose_parameters(1, 16, &fast).unwrap();
        assert_eq!(p.n(), 4096);
    }

    #[test]
    fn a_threshold_switched_result_keeps_room_under_its_logits() {
        // mode (a): each rescale divides by two primes (an 80–90-bit scale), and a base holds
        // the logits, sign and flooding
        let policy = ParamPolicy::threshold_switched(4);
        let p = choose_parameters(5, 4096, &policy).unwrap();
        assert!((80.0..=90.0).contains(&p.log_scale()), "{}", p.log_scale());
        assert!(!p.rlwe().is_insecure());
        let q = p.rlwe().q();
        let bits = |x: u64| (x as f64).log2();
        let base = q.len() - 2 * 5;
        assert!(base >= 2, "one prime cannot hold 80 + 10 + 1 + 4 bits");
        let base_bits: f64 = q[..base].iter().map(|&x| bits(x)).sum();
        assert!(base_bits >= p.log_scale() + 14.0, "{base_bits}");
        for pair in q[base..].chunks(2) {
            let step = bits(pair[0]) + bits(pair[1]);
            assert!((step - p.log_scale()).abs() < 1.0, "a step of {step} bits");
        }
        // without room, a 40-bit scale keeps a single base prime and one prime per rescale
        let p = choose_parameters(5, 4096, &ParamPolicy::default()).unwrap();
        assert_eq!(p.max_level(), 6);
        // a scale beyond one prime needs several primes per rescale
        let wide = ParamPolicy {
            min_scale_bits: 80,
            max_scale_bits: 90,
            ..ParamPolicy::default()
        };
        assert!(matches!(
            choose_parameters(5, 4096, &wide),
            Err(InferError::Policy(_))
        ));
    }

    #[test]
    fn too_deep_or_too_wide_is_refused() {
        let policy = ParamPolicy::default();
        let max = max_depth(&policy);
        assert!(max >= 20, "{max}");
        assert!(matches!(
            choose_parameters(max + 1, 16, &policy),
            Err(InferError::TooDeep { .. })
        ));
        assert!(matches!(
            choose_parameters(100, 16, &policy),
            Err(InferError::TooDeep { depth: 100, .. })
        ));
        assert!(matches!(
            choose_parameters(1, 1 << 15, &policy),
            Err(InferError::TooWide { .. })
        ));
        let bad = ParamPolicy {
            min_scale_bits: 50,
            max_scale_bits: 30,
            ..policy
        };
        assert!(matches!(
            choose_parameters(1, 16, &bad),
            Err(InferError::Policy(_))
        ));
    }
}
