//! CKKS parameter sets: the RLWE parameters plus a default scale, and the named presets.

use crate::rlwe::{ParamsError, RlweParams};

use super::error::CkksError;

/// Named parameter sets, each checked against the HE standard's 128-bit table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// Homomorphic aggregation of model updates: N = 2^13, Q = two 60-bit primes (120 bits of the
    /// 218 allowed), no special primes (aggregation and public-key switching need no key-switching
    /// keys). N reals per ciphertext by complex packing: 30 bytes per real on the wire. Default
    /// scale 2^60; the aggregation layer picks its own from the number of clients, their weights
    /// and the flooding noise, within the 2^119 that Q/2 leaves.
    Aggregation,
    /// Encrypted inference of a small CNN: N = 2^14, Q = 60 + 6×40 bits (depth 6 at scale 2^40),
    /// P = two 60-bit primes, 4 key-switching digits; log2(QP) = 420 of the 438 allowed.
    Inference,
}

impl Preset {
    pub const ALL: [Preset; 2] = [Preset::Aggregation, Preset::Inference];

    pub fn name(self) -> &'static str {
        match self {
            Preset::Aggregation => "aggregation",
            Preset::Inference => "inference",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// RLWE parameters with the default scale Δ = 2^log_scale for encoding.
#[derive(Clone, Debug, PartialEq)]
pub struct Parameters {
    rlwe: RlweParams,
    log_scale: f64,
}

impl Parameters {
    /// Secure parameters from prime bit sizes (primes are generated, largest first).
    pub fn new(
        log_n: u32,
        q_bits: &[u32],
        p_bits: &[u32],
        dnum: usize,
        log_scale: f64,
    ) -> Result<Self, CkksError> {
        let (q, p) = RlweParams::primes_for(log_n, q_bits, p_bits)?;
        Self::from_rlwe(RlweParams::new(log_n, q, p, dnum)?, log_scale)
    }

    /// Insecure parameters for fast tests (never accepted where secure ones are expected: the
    /// mark is part of the fingerprint).
    #[doc(hidden)]
    pub fn insecure_for_tests(
        log_n: u32,
        q_bits: &[u32],
        p_bits: &[u32],
        dnum: usize,
        log_scale: f64,
    ) -> Result<Self, CkksError> {
        let (q, p) = RlweParams::primes_for(log_n, q_bits, p_bits)?;
        Self::from_rlwe(
            RlweParams::insecure_for_tests(log_n, q, p, dnum)?,
            log_scale,
        )
    }

    pub fn from_rlwe(rlwe: RlweParams, log_scale: f64) -> Result<Self, CkksError> {
        if !(log_scale.is_finite() && log_scale > 1.0 && log_scale <= 120.0) {
            return Err(CkksError::Params(ParamsError::Scale(log_scale)));
        }
        Ok(Self { rlwe, log_scale })
    }

    pub fn preset(preset: Preset) -> Self {
        let built = match preset {
            Preset::Aggregation => Self::new(13, &[60, 60], &[], 1, 60.0),
            Preset::Inference => Self::new(14, &[60, 40, 40, 40, 40, 40, 40], &[60, 60], 4, 40.0),
        };
        built.expect("presets are valid and 128-bit secure (checked by tests)")
    }

    pub fn rlwe(&self) -> &RlweParams {
        &self.rlwe
    }
    pub fn log_scale(&self) -> f64 {
        self.log_scale
    }
    pub fn default_scale(&self) -> f64 {
        2f64.powf(self.log_scale)
    }
    pub fn n(&self) -> usize {
        self.rlwe.n()
    }
    /// Complex slots per ciphertext (N/2); real values per ciphertext with pair packing: N.
    pub fn slots(&self) -> usize {
        self.rlwe.n() / 2
    }
    pub fn max_level(&self) -> usize {
        self.rlwe.max_level()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rlwe::max_log_qp_128;

    #[test]
    fn presets_are_secure_and_shaped_as_documented() {
        for preset in Preset::ALL {
            let p = Parameters::preset(preset);
            assert!(!p.rlwe().is_insecure());
            let bound = max_log_qp_128(p.rlwe().log_n()).unwrap();
            assert!(p.rlwe().log_qp() <= bound, "{preset:?}");
            assert_eq!(Preset::from_name(preset.name()), Some(preset));
        }
        let agg = Parameters::preset(Preset::Aggregation);
        assert_eq!(
            (agg.n(), agg.max_level(), agg.rlwe().p().len()),
            (8192, 2, 0)
        );
        // bytes per real on the wire for a fresh ciphertext: 2 polys × log2(Q) bits / 8 per real
        let bytes_per_real = 2.0
            * agg
                .rlwe()
                .q()
                .iter()
                .map(|&q| 64 - q.leading_zeros())
                .sum::<u32>() as f64
            / 8.0;
        assert!(bytes_per_real <= 32.0);
        let inf = Parameters::preset(Preset::Inference);
        assert_eq!((inf.n(), inf.max_level(), inf.rlwe().dnum()), (16384, 7, 4));
    }

    #[test]
    fn bad_scales_are_refused() {
        for s in [0.0, 1.0, f64::NAN, 121.0] {
            assert!(Parameters::new(12, &[50, 50], &[], 1, s).is_err());
        }
    }
}
