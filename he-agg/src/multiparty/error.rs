//! Errors of the multiparty protocols.

use crate::ckks::CkksError;
use crate::ckks::wire::WireError;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum MultipartyError {
    #[error("a {what} made for other parameters")]
    Foreign { what: &'static str },
    #[error("shares of different shapes cannot be combined ({0})")]
    Shape(&'static str),
    #[error("threshold {threshold} is not in 1..={parties}")]
    Threshold { threshold: usize, parties: usize },
    #[error("party index {0} is not usable (indices are distinct and in 1..=65535)")]
    PartyIndex(u32),
    #[error("{got} parties are active where at least {threshold} are needed")]
    TooFewParties { got: usize, threshold: usize },
    #[error("party {0} is not in the active set")]
    NotActive(u32),
    #[error("expected exactly one share from each of {expected} parties, got {got}")]
    MissingShares { expected: usize, got: usize },
    #[error("party {0} dealt no share of its secret to this party (not one of the setup's)")]
    NotDealer(u32),
    #[error("{got} contributions where 1..={max} can be switched")]
    Contributions { got: usize, max: usize },
    #[error("share addressed to party {to} from party {from} given to party {me}")]
    Misaddressed { from: u32, to: u32, me: u32 },
    #[error(
        "flooding noise 2^{flood_bits:.1} with a message of 2^{message_bits:.1} does not fit below \
         Q/2 = 2^{room_bits:.1} at level {level}: use a lower scale, fewer parties, or a bigger modulus"
    )]
    Headroom {
        level: usize,
        flood_bits: f64,
        message_bits: f64,
        room_bits: f64,
    },
    #[error(
        "a refresh at level {level} needs masks of {mask_bits} bits, using 2^{used_bits:.1} of \
         q/2 = 2^{room_bits:.1}: refresh from a higher level, at a lower scale or among fewer parties"
    )]
    RefreshRoom {
        level: usize,
        mask_bits: u32,
        used_bits: f64,
        room_bits: f64,
    },
    #[error(
        "a refreshed value reaches 2^{found_bits:.1} where the masks, values and flooding stay \
         below 2^{bound_bits:.1}: the ciphertext carried more than its plan's bound (crafted \
         noise or values out of range); nothing is refreshed"
    )]
    RefreshRange { found_bits: f64, bound_bits: f64 },
    #[error(
        "a bound on the slots' magnitude must be finite and positive (got {0}, or its product with the scale is below 1)"
    )]
    ValueBound(f64),
    #[error("statistical security of {0} bits is below the 30-bit minimum")]
    WeakFlooding(u32),
    #[error("noise bound {0} is not a finite positive number")]
    NoiseBound(f64),
    #[error(
        "flooding of σ = 2^{0:.1} exceeds the sampler's 2^100: lower the statistical security or \
         the noise bound"
    )]
    FloodingTooWide(f64),
    #[error("ciphertext of degree {0}: key switching takes degree 1")]
    Degree(usize),
    #[error("the sealed share failed authentication (wrong key, sender, receiver or tampering)")]
    Unseal,
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error(transparent)]
    Ckks(#[from] CkksError),
}
