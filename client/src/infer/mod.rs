//! Encrypted inference, the requester's side and the evaluation command.
//!
//! - [`requester`]: keys under the requester's own secret (exactly the plan's Galois steps),
//!   images encoded and encrypted in the plan's layout, results decrypted and decoded; the plan
//!   is compiled from the server's architecture and checked by fingerprint;
//! - [`images`]: what `client infer` takes: PNG/JPEG files or `dataset:split:index`;
//! - [`local`]: the same request evaluated in this process (`client infer --local`);
//! - [`remote`]: the request over the federation's QUIC/mTLS link to an inference server, in the
//!   mode the site accepts ([`pinned`]);
//! - [`outcome`]: per-image results, timings and sizes, printed and written as JSON;
//! - [`evaluate`]: `client evaluate-encrypted`, encrypted inference over a whole split of any
//!   data set ([`eval_split`]), batched (where a batch fits memory: [`batched_setup`]) or per
//!   image ([`eval_runs`]), compared with the plaintext network (agreement, accuracy, AUC,
//!   latency, throughput).

pub mod batched_setup;
pub mod error;
pub mod eval_runs;
pub mod eval_split;
pub mod evaluate;
pub mod images;
pub mod local;
pub mod outcome;
pub mod pinned;
pub mod remote;
pub mod requester;

pub use error::InferenceError;
pub use eval_runs::Packing;
pub use eval_split::EvalData;
pub use evaluate::{EvaluateOptions, EvaluationReport, evaluate_encrypted};
pub use images::{ImageArg, LoadedImage, load_images};
pub use outcome::{ImageResult, InferOutcome};
pub use requester::Requester;

#[cfg(test)]
mod tests;
