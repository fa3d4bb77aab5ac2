//! The hospital's side of HEAL beyond the node binary: the requester of encrypted inference
//! (`infer`) and the clinicians' web portal (`portal`). Training lives in the `training` crate,
//! re-exported here under its module names so the node, the requester and the portal speak of
//! one model.

pub mod head;
pub mod infer;
pub mod portal;

pub use training::{
    TrainError, baseline, data, dp_sgd, error, export, front, membership, metrics, model, params,
    strategy, train,
};
