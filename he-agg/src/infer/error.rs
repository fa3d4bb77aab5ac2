//! Errors of the inference layer: malformed network descriptions, and inference requests that do
//! not fit a plan.

use crate::ckks::CkksError;

/// Why a network description is refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum NetworkError {
    #[error("the input shape {0:?} has a zero dimension")]
    EmptyInput([usize; 3]),
    #[error("the network has no layers")]
    NoLayers,
    #[error("layer {layer}: {what} must be at least 1")]
    Zero { layer: usize, what: &'static str },
    #[error("layer {layer}: expects input {expected}, but the previous layer gives {found}")]
    ShapeMismatch {
        layer: usize,
        expected: String,
        found: String,
    },
    #[error("layer {layer}: {what} has {found} values, the shapes need {expected}")]
    WeightLen {
        layer: usize,
        what: &'static str,
        expected: usize,
        found: usize,
    },
    #[error("layer {layer}: kernel {kernel} does not fit the padded input {padded}×{padded}")]
    KernelTooLarge {
        layer: usize,
        kernel: usize,
        padded: usize,
    },
    #[error("layer {layer}: {what} needs a [c, h, w] input, but the input is already flat")]
    NeedsSpatial { layer: usize, what: &'static str },
    #[error("layer {layer}: {what} is not a finite number")]
    NotFinite { layer: usize, what: &'static str },
    #[error("normalisation has {mean} means and {std} deviations for {channels} input channels")]
    NormalizationLen {
        channels: usize,
        mean: usize,
        std: usize,
    },
    #[error("normalisation standard deviation of channel {0} is not a positive finite number")]
    BadStd(usize),
    #[error("scattering front: {what} cannot be {value}")]
    Scatter { what: &'static str, value: usize },
    #[error("layer {layer}: a residual block needs at least one layer in its body")]
    EmptyBlock { layer: usize },
    #[error(
        "layer {layer}: a residual block's body holds convolutions, pooling and activations only \
         (no dense, flatten, global pooling or nested block)"
    )]
    BlockLayer { layer: usize },
    #[error("layer {layer}: the block's body gives {body}, its shortcut {shortcut}")]
    BlockShapes {
        layer: usize,
        body: String,
        shortcut: String,
    },
    #[error("input has {found} values, the network takes {expected}")]
    InputLen { expected: usize, found: usize },
    #[error("layer {layer}: the layer is too large ({what} = {value})")]
    TooLarge {
        layer: usize,
        what: &'static str,
        value: usize,
    },
}

/// Why an encrypted inference cannot be planned or run.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InferError {
    #[error(transparent)]
    Network(#[from] NetworkError),
    #[error(transparent)]
    Ckks(#[from] CkksError),
    #[error(
        "the network needs multiplicative depth {depth}; no 128-bit-secure parameter set with a \
         scale of at least 2^{min_scale_bits} reaches it (at most {max_depth} with N = 2^15)"
    )]
    TooDeep {
        depth: usize,
        max_depth: usize,
        min_scale_bits: u32,
    },
    #[error("the packing needs {needed} slots per ciphertext, more than N = 2^15 gives ({max})")]
    TooWide { needed: usize, max: usize },
    #[error("the parameters give {slots} slots, the plan needs {needed}")]
    TooFewSlots { slots: usize, needed: usize },
    #[error("the parameters give depth {levels}, the plan needs {depth}")]
    TooFewLevels { levels: usize, depth: usize },
    #[error("the context's parameters are not the ones the plan was made for")]
    ContextMismatch,
    #[error("the encrypted model does not match this plan ({0})")]
    ModelMismatch(&'static str),
    #[error("the input ciphertext is at level {found}, the plan starts at level {expected}")]
    InputLevel { expected: usize, found: usize },
    #[error("the input ciphertext has scale 2^{found:.3}, the plan expects 2^{expected:.3}")]
    InputScale { expected: f64, found: f64 },
    #[error("{found} input ciphertexts for a plan whose image spans {expected}")]
    InputCiphertexts { expected: usize, found: usize },
    #[error("{images} images do not fit one batch of {slots}")]
    BatchTooLarge { images: usize, slots: usize },
    #[error("{found} input ciphertexts for a network that takes {expected} values per image")]
    BatchInputs { expected: usize, found: usize },
    #[error("a batch needs at least one image")]
    EmptyBatch,
    #[error(
        "layer {layer} is a ReLU, which CKKS cannot evaluate: train with `activation = \"square\"` \
         or `\"quadratic\"` for encrypted inference"
    )]
    NotPolynomial { layer: usize },
    #[error(
        "layer {layer}: channel {channel}'s x² coefficient is 0; encrypted plans need every a ≠ 0 \
         (train the activation with its lower bound)"
    )]
    ZeroQuadratic { layer: usize, channel: usize },
    #[error(
        "this plan refreshes its ciphertexts between {segments} segments: evaluate it segment by \
         segment (Model::evaluate_segment) with a refresh in between"
    )]
    NeedsRefresh { segments: usize },
    #[error(
        "a stretch of the network between two places a refresh may cut (outside residual blocks) \
         needs {stretch} levels; no 128-bit-secure ring with a scale of at least \
         2^{min_scale_bits} holds it above a refresh's mask"
    )]
    TooDeepToCut { stretch: usize, min_scale_bits: u32 },
    #[error("refresh {index} of a plan with {refreshes}")]
    RefreshIndex { index: usize, refreshes: usize },
    #[error("not supported yet: {0}")]
    Unsupported(&'static str),
    #[error("invalid parameter policy: {0}")]
    Policy(&'static str),
    #[error(transparent)]
    Multiparty(#[from] crate::multiparty::MultipartyError),
    #[error("on the GPU: {0}")]
    Device(#[from] crate::gpu::GpuError),
    #[error("no randomness from the operating system: {0}")]
    Rng(#[from] crate::ring::RngError),
}
