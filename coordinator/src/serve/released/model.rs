//! The served model: read from disk (`heal-network/1`, or a bare network description), validated,
//! compiled into its latency plan with the default parameter policy, ready for plaintext-weight
//! evaluation.

use std::path::Path;
use std::sync::Arc;

use he_agg::aggregate::{BackendChoice, CudaError};
use he_agg::ckks::CkksContext;
use he_agg::infer::{
    InferError, InferencePlan, Model, Network, NetworkFile, ParamPolicy, Placement,
};
use protocol::serve::released::{MAX_IMAGES, ModelInfo};

/// Why a model cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a network description: {message}")]
    Parse { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
    #[error("{path}: cannot compile for encrypted inference: {source}")]
    Plan {
        path: String,
        #[source]
        source: InferError,
    },
}

/// A compiled model and what requesters are told about it.
pub struct ServedModel {
    network: Network,
    plan: InferencePlan,
    ctx: Arc<CkksContext>,
    model: Model,
    info: ModelInfo,
    placement: Placement,
}

impl std::fmt::Debug for ServedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServedModel")
            .field("name", &self.info.name)
            .finish_non_exhaustive()
    }
}

impl ServedModel {
    /// Reads `path`: a `heal-network/1` export (class names from it) or a bare network
    /// description (classes numbered).
    pub fn load(path: &Path, max_images: u32) -> Result<Self, ModelError> {
        let p = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| ModelError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.len() > 1 << 30 {
            return Err(ModelError::Invalid {
                path: p,
                message: format!(
                    "{} bytes is too large for a network description",
                    meta.len()
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: p.clone(),
            source,
        })?;
        let name = path
            .parent()
            .and_then(|d| d.file_name())
            .or(path.file_stem())
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into());
        Self::from_json(&text, &name, max_images).map_err(|e| match e {
            ModelError::Parse { message, .. } => ModelError::Parse { path: p, message },
            ModelError::Invalid { message, .. } => ModelError::Invalid { path: p, message },
            ModelError::Plan { source, .. } => ModelError::Plan { path: p, source },
            other => other,
        })
    }

    /// From JSON text (either form, see [`ServedModel::load`]).
    pub fn from_json(text: &str, name: &str, max_images: u32) -> Result<Self, ModelError> {
        let parse = |message: String| ModelError::Parse {
            path: name.into(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| parse(e.to_string()))?;
        let (network, class_names, preparation) = if value.get("format").is_some() {
            let file = NetworkFile::from_json(text, std::path::Path::new(name))
                .map_err(|e| parse(e.to_string()))?;
            let prep = file
                .input_preparation
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default();
            (file.network, file.class_names, prep)
        } else {
            let net: Network = serde_json::from_value(value).map_err(|e| parse(e.to_string()))?;
            let names = (0..net.output_len())
                .map(|c| format!("class-{c}"))
                .collect();
            (net, names, String::new())
        };
        let mut served = Self::new(network, class_names, name, max_images)?;
        served
            .info
            .set_input_preparation(preparation)
            .map_err(|message| ModelError::Invalid {
                path: name.into(),
                message,
            })?;
        Ok(served)
    }

    /// Compiles `network` (default parameter policy: what requesters compile too).
    pub fn new(
        network: Network,
        class_names: Vec<String>,
        name: &str,
        max_images: u32,
    ) -> Result<Self, ModelError> {
        let invalid = |message: String| ModelError::Invalid {
            path: name.into(),
            message,
        };
        if class_names.len() != network.output_len() {
            return Err(invalid(format!(
                "{} class names for {} outputs",
                class_names.len(),
                network.output_len()
            )));
        }
        if !(1..=MAX_IMAGES).contains(&max_images) {
            return Err(invalid(format!(
                "max images per request must be 1 to {MAX_IMAGES}"
            )));
        }
        let plan_err = |source| ModelError::Plan {
            path: name.into(),
            source,
        };
        let plan = InferencePlan::new(&network, &ParamPolicy::default()).map_err(plan_err)?;
        let ctx = CkksContext::new(plan.spec().parameters().clone())
            .map_err(|e| plan_err(InferError::Ckks(e)))?;
        let model = Model::plain(&plan, &ctx).map_err(plan_err)?;
        let architecture = serde_json::to_string(&network.architecture())
            .map_err(|e| invalid(format!("architecture: {e}")))?;
        let info = ModelInfo::new(
            name,
            architecture,
            class_names,
            plan.spec().fingerprint(),
            max_images,
        )
        .map_err(invalid)?;
        Ok(Self {
            network,
            plan,
            ctx,
            model,
            info,
            placement: Placement::Cpu,
        })
    }

    /// What a requester is told.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
    pub fn network(&self) -> &Network {
        &self.network
    }
    pub fn plan(&self) -> &InferencePlan {
        &self.plan
    }
    pub fn context(&self) -> &Arc<CkksContext> {
        &self.ctx
    }
    pub(crate) fn model(&self) -> &Model {
        &self.model
    }
    pub fn placement(&self) -> &Placement {
        &self.placement
    }
    /// Evaluate where `placement` says (the CPU unless told otherwise).
    pub fn with_placement(mut self, placement: Placement) -> Self {
        self.placement = placement;
        self
    }
    /// Where `choice` asks for this model to be evaluated (see [`Placement::select`]).
    pub fn select_placement(&self, choice: BackendChoice) -> Result<Placement, CudaError> {
        Placement::select(choice, &self.model)
    }
}
