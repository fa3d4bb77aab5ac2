//! What can go wrong while aggregating.

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AggregateError {
    #[error(
        "ciphertext at level {got}, degree {got_degree}, scale 2^{got_scale:.3} where the round expects level {want}, degree {want_degree}, scale 2^{want_scale:.3}"
    )]
    Shape {
        got: usize,
        got_degree: usize,
        got_scale: f64,
        want: usize,
        want_degree: usize,
        want_scale: f64,
    },
    #[error("level {level} is outside 1..={max} or degree {degree} is not 1 or 2")]
    BadShape {
        level: usize,
        degree: usize,
        max: usize,
    },
    #[error("weight {0} is outside 1..=2^40")]
    Weight(u64),
    #[error("nothing was aggregated")]
    Empty,
    #[error("the {backend} backend failed: {reason}")]
    Backend { backend: String, reason: String },
}
