//! The trainable state of a network's layers (burn modules): what the forward pass reads and
//! every export, transfer and DP-SGD walks.

use burn::module::{Module, Param};
use burn::nn::BatchNorm;
use burn::tensor::Tensor;

use super::activation::{ActParams, PolyParams, QuadParams};

/// Convolution parameters: weight `[out, in, k, k]`, bias `[out]`.
#[derive(Module, Debug)]
pub struct ConvParams {
    /// `[out, in, k, k]`.
    pub weight: Param<Tensor<4>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

/// Dense parameters: weight stored `[in, out]` (burn's layout; exported as `[out, in]`), bias
/// `[out]`.
#[derive(Module, Debug)]
pub struct DenseParams {
    /// `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// `[out]`.
    pub bias: Param<Tensor<1>>,
}

/// A residual block's parameters: the body's two convolutions with their batch norms and
/// activation, the projection (where the shape changes) and the activation after the sum.
#[derive(Module, Debug)]
pub struct BlockParams {
    /// First convolution (strided).
    pub conv1: ConvParams,
    /// Its batch norm.
    pub bn1: BatchNorm,
    /// The activation between the convolutions.
    pub act1: Option<ActParams>,
    /// Second convolution.
    pub conv2: ConvParams,
    /// Its batch norm (γ starts at 0: the block starts as its shortcut).
    pub bn2: BatchNorm,
    /// 1×1 projection of the shortcut, where channels or size change.
    pub proj: Option<ConvParams>,
    /// Its batch norm.
    pub proj_bn: Option<BatchNorm>,
    /// Batch norm of the sum, so that the activation after it sees normalised values (it folds
    /// into that activation's coefficients for inference).
    pub bn3: BatchNorm,
    /// The activation after the sum.
    pub act2: Option<ActParams>,
}

/// The trainable state of one layer.
// one value per layer, made once: a block's size costs nothing worth a box (and burn's Module
// derive walks the variants as they are)
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
pub enum LayerParams {
    /// Convolution.
    Conv(ConvParams),
    /// Dense.
    Dense(DenseParams),
    /// Batch norm (gamma, beta, running mean and variance).
    Norm(BatchNorm),
    /// Quadratic activation.
    Quad(QuadParams),
    /// Per-channel polynomial activation.
    Poly(PolyParams),
    /// Residual block.
    Block(BlockParams),
}
