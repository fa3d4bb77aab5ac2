//! The instruction-set level every kernel runs at. The crate is built for the baseline x86-64
//! target so one binary runs everywhere; each hot loop has copies compiled for wider levels and
//! picks one per call from [`level`]. By default that is the best the CPU has; `HEAL_SIMD` (or
//! [`set_level`]) forces a lower one, so every path is tested and benchmarked on any machine that
//! has it. All levels give the same words for every exact (modular) kernel; float kernels (the
//! encoder's FFT) may differ in the last bits, well inside CKKS's precision.

use std::sync::atomic::{AtomicU8, Ordering};

/// An instruction-set level. The x86 levels are ordered, each including the ones below it;
/// `Neon` (aarch64's Advanced SIMD, part of every aarch64 CPU) includes `Scalar` only and sorts
/// below every x86 vector level, so a test such as `level() >= Level::Avx2` never holds on ARM.
/// A CPU offers only its own architecture's chain ([`Level::supported`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable 64-bit code, no vector extensions beyond the target's baseline.
    Scalar = 1,
    /// aarch64's Advanced SIMD: two 64-bit lanes (double-precision NTTs).
    Neon = 2,
    /// AVX2, FMA and BMI2 (Intel Haswell and later, AMD Zen).
    Avx2 = 3,
    /// AVX-512 F/DQ/VL/BW (Intel Skylake-SP and later, AMD Zen 4).
    Avx512 = 4,
    /// AVX-512 with IFMA's 52-bit multiply-add (Intel Ice Lake and later, AMD Zen 4).
    Ifma = 5,
}

/// Why a requested level cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SimdError {
    #[error("HEAL_SIMD={0:?} is not a level: use scalar, neon, avx2, avx512, ifma or auto")]
    Unknown(String),
    #[error("SIMD level {wanted} is not available on this CPU (it has up to {best})")]
    Unsupported { wanted: Level, best: Level },
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Scalar,
        Level::Neon,
        Level::Avx2,
        Level::Avx512,
        Level::Ifma,
    ];

    /// The levels of this CPU's architecture, lowest first.
    fn chain() -> &'static [Level] {
        if cfg!(target_arch = "x86_64") {
            &[Level::Scalar, Level::Avx2, Level::Avx512, Level::Ifma]
        } else if cfg!(target_arch = "aarch64") {
            &[Level::Scalar, Level::Neon]
        } else {
            &[Level::Scalar]
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Neon => "neon",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Ifma => "ifma",
        }
    }

    /// Parses a level name; `auto` (or an empty string) is `None`: the best the CPU has.
    pub fn parse(s: &str) -> Result<Option<Level>, SimdError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(None),
            "scalar" => Ok(Some(Level::Scalar)),
            "neon" => Ok(Some(Level::Neon)),
            "avx2" => Ok(Some(Level::Avx2)),
            "avx512" => Ok(Some(Level::Avx512)),
            "ifma" => Ok(Some(Level::Ifma)),
            _ => Err(SimdError::Unknown(s.to_string())),
        }
    }

    /// The best level the running CPU supports (detected once, cached by std).
    pub fn detected() -> Level {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx512 =
                has!("avx512f") && has!("avx512dq") && has!("avx512vl") && has!("avx512bw");
            if avx512 && has!("avx512ifma") {
                return Level::Ifma;
            }
            if avx512 {
                return Level::Avx512;
            }
            if has!("avx2") && has!("fma") && has!("bmi2") {
                return Level::Avx2;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if std::arch::is_aarch64_feature_detected!("neon") {
            return Level::Neon;
        }
        Level::Scalar
    }

    /// Whether this CPU can run this level (no allocation: kernels ask per call).
    pub fn is_available(self) -> bool {
        Level::chain().contains(&self) && self <= Level::detected()
    }

    /// Every level this CPU can run, lowest first.
    pub fn supported() -> Vec<Level> {
        let best = Level::detected();
        Level::chain()
            .iter()
            .copied()
            .filter(|l| *l <= best)
            .collect()
    }

    fn from_u8(v: u8) -> Option<Level> {
        Level::ALL.into_iter().find(|l| *l as u8 == v)
    }
}

/// 0: not yet chosen; otherwise a `Level as u8`.
static LEVEL: AtomicU8 = AtomicU8::new(0);

/// The level kernels run at now. The first call reads `HEAL_SIMD`; a value that is not a level
/// or that the CPU lacks is reported (binaries call [`init_from_env`] first to refuse it) and
/// the best level is used instead.
#[inline]
pub fn level() -> Level {
    match Level::from_u8(LEVEL.load(Ordering::Relaxed)) {
        Some(l) => l,
        None => match init_from_env() {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "HEAL_SIMD ignored");
                let best = Level::detected();
                LEVEL.store(best as u8, Ordering::Relaxed);
                best
            }
        },
    }
}

/// Reads `HEAL_SIMD` (unset or `auto`: the best the CPU has) and sets the level. Binaries call
/// this at start so a bad value is an error with its reason, not a silent fallback.
pub fn init_from_env() -> Result<Level, SimdError> {
    let wanted = match std::env::var("HEAL_SIMD") {
        Ok(v) => Level::parse(&v)?,
        Err(_) => None,
    };
    let l = match wanted {
        Some(l) => l,
        None => Level::detected(),
    };
    set_level(l)?;
    Ok(l)
}

/// Forces a level for every kernel from now on (tests and benchmarks switch levels in one
/// process: results are the same at every level, so a switch between two calls is harmless).
pub fn set_level(l: Level) -> Result<(), SimdError> {
    let best = Level::detected();
    if !l.is_available() {
        return Err(SimdError::Unsupported { wanted: l, best });
    }
    LEVEL.store(l as u8, Ordering::Relaxed);
    Ok(())
}

/// Whether kernels may use AVX2 and FMA now.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(crate) fn has_avx2_fma() -> bool {
    level() >= Level::Avx2
}

/// Defines `$name` that runs `$body` compiled for AVX2+FMA when the level allows it, and for the
/// baseline otherwise. The body must be plain safe code over its arguments.
macro_rules! dispatch {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn generic($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? { generic($($arg),*) }
            #[cfg(target_arch = "x86_64")]
            if $crate::simd::has_avx2_fma() {
                // SAFETY: the level is at most what the CPU supports (set_level checks).
                return unsafe { avx2($($arg),*) };
            }
            generic($($arg),*)
        }
    };
}
pub(crate) use dispatch;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_order_and_refuse_what_the_cpu_lacks() {
        assert_eq!(Level::parse("AVX2"), Ok(Some(Level::Avx2)));
        assert_eq!(Level::parse("auto"), Ok(None));
        assert_eq!(Level::parse(" scalar "), Ok(Some(Level::Scalar)));
        assert!(matches!(Level::parse("sse9"), Err(SimdError::Unknown(_))));
        assert!(Level::Scalar < Level::Avx2 && Level::Avx512 < Level::Ifma);
        let best = Level::detected();
        assert_eq!(Level::supported().last(), Some(&best));
        if let Some(&above) = Level::ALL.iter().find(|l| **l > best) {
            let before = level();
            assert_eq!(
                set_level(above),
                Err(SimdError::Unsupported {
                    wanted: above,
                    best
                })
            );
            assert_eq!(level(), before, "a refused level changes nothing");
        }
        // the other architecture's vector level is never offered
        let foreign = if cfg!(target_arch = "aarch64") {
            Level::Avx2
        } else {
            Level::Neon
        };
        assert!(!Level::supported().contains(&foreign));
        assert!(set_level(foreign).is_err());
        assert_eq!(Level::parse("NEON"), Ok(Some(Level::Neon)));
    }
}
