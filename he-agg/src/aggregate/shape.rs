//! The shape every ciphertext of a round must have.

/// What every ciphertext of a round must look like.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shape {
    pub level: usize,
    /// 1 for ordinary ciphertexts.
    pub degree: usize,
    pub scale: f64,
}
