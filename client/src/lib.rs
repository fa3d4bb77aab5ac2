//! The hospital's side of HEAL beyond the node binary: the requester of encrypted inference
//! (`infer`), the clinicians' web portal (`portal`) and encrypted head training's features
//! (`head`). Training lives in the `training` crate, used under its own name everywhere.

pub mod head;
pub mod infer;
pub mod pacs;
pub mod portal;
