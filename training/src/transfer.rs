//! Starting from what is already known: a pretrained backbone's weights into a network
//! (`[model.init]`), from HEAL's own files or a torchvision ResNet's state dict; a backbone
//! pretrained on public data (`client pretrain`); a ReLU network made HE-friendly and taught by
//! its ReLU self (`client convert`).
//!
//! Loading goes through the flat parameter vector ([`crate::params`]): every entry of the
//! network's manifest is looked up in the file under the layout's name for it, its shape is
//! checked, and the entries a layout has no tensor for (a HEAL block's batch norm after the sum,
//! a polynomial's coefficients) keep values that leave the network computing what the backbone
//! computed. A first convolution whose file has 3 input channels where the network reads 1 is
//! summed over them (grey images as R = G = B), as timm's `adapt_input_conv` does.

pub mod contrastive;
mod convert;
mod init;
mod layout;
pub mod pretrain;
mod weights;

pub use convert::{Conversion, ConversionSummary, he_friendly, run_convert};
pub use init::{InitReport, initial_network, load_init};
pub use layout::{Source, sources, torchvision_resnet};
pub use weights::{MAX_WEIGHTS_BYTES, NamedTensor, Weights, weights_of};
