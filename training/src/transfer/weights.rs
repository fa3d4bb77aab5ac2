//! Named tensors from the files hospitals have: safetensors, and PyTorch's `torch.save` output
//! (`.pt`/`.pth`, read without running the pickle: no code in a file is executed). Every
//! value becomes `f32`; integer tensors are skipped (a batch-norm's `num_batches_tracked`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::error::TrainError;

/// Files larger than this are refused before they are read (a ResNet-152's weights are 240 MB).
pub const MAX_WEIGHTS_BYTES: u64 = 2 << 30;

/// One tensor: shape (row-major) and values.
#[derive(Clone, Debug, PartialEq)]
pub struct NamedTensor {
    /// Extents, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub values: Vec<f32>,
}

/// The float tensors of a weights file by name, with the file's string metadata (safetensors'
/// `__metadata__`; empty for PyTorch files).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    /// Tensors by name.
    pub tensors: BTreeMap<String, NamedTensor>,
    /// String metadata (a HEAL backbone's provenance).
    pub metadata: BTreeMap<String, String>,
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Weights {
        path: path.into(),
        message: message.into(),
    }
}

fn check_size(path: &Path) -> Result<(), TrainError> {
    let len = std::fs::metadata(path)
        .map_err(|e| TrainError::io(path, e))?
        .len();
    if len > MAX_WEIGHTS_BYTES {
        return Err(bad(
            path,
            format!("{len} bytes, more than the {MAX_WEIGHTS_BYTES} a weights file may have"),
        ));
    }
    Ok(())
}

impl Weights {
    /// Reads a weights file: `.safetensors`, or a PyTorch file (`.pt`, `.pth`, `.bin`, `.ckpt`)
    /// whose state dict is at the top level or under `state_dict` / `model`.
    pub fn read(path: &Path) -> Result<Self, TrainError> {
        check_size(path)?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("")
            .to_ascii_lowercase();
        match ext.as_str() {
            "safetensors" => Self::read_safetensors(path),
            "pt" | "pth" | "bin" | "ckpt" => Self::read_pytorch(path),
            other => Err(bad(
                path,
                format!(
                    "unknown weights format {other:?}: name the file .safetensors, or .pt/.pth \
                     for a PyTorch state dict"
                ),
            )),
        }
    }

    /// Reads a safetensors file.
    pub fn read_safetensors(path: &Path) -> Result<Self, TrainError> {
        check_size(path)?;
        let bytes = std::fs::read(path).map_err(|e| TrainError::io(path, e))?;
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(path, e.to_string()))?;
        let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, e.to_string()))?;
        let metadata = meta
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut tensors = BTreeMap::new();
        for (name, view) in st.tensors() {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => le_words::<4>(data).map(f32::from_le_bytes).collect(),
                Dtype::F64 => le_words::<8>(data)
                    .map(|w| f64::from_le_bytes(w) as f32)
                    .collect(),
                Dtype::F16 => le_words::<2>(data)
                    .map(|w| half::f16::from_le_bytes(w).to_f32())
                    .collect(),
                Dtype::BF16 => le_words::<2>(data)
                    .map(|w| half::bf16::from_le_bytes(w).to_f32())
                    .collect(),
                Dtype::I64 | Dtype::I32 | Dtype::I16 | Dtype::I8 | Dtype::U8 | Dtype::BOOL => {
                    continue;
                }
                other => {
                    return Err(bad(
                        path,
                        format!("tensor {name}: dtype {other:?} (f32, f64, f16 or bf16 are read)"),
                    ));
                }
            };
            let shape = view.shape().to_vec();
            tensors.insert(name, NamedTensor { shape, values });
        }
        Ok(Self { tensors, metadata })
    }

    /// Reads a PyTorch `torch.save` file (zip or legacy) holding a state dict, at the top level
    /// or under `state_dict` or `model` (training checkpoints).
    pub fn read_pytorch(path: &Path) -> Result<Self, TrainError> {
        check_size(path)?;
        let mut reader = pytorch_reader::PytorchReader::new(path);
        for key in ["state_dict", "model"] {
            if reader.as_ref().map(|r| r.is_empty()).unwrap_or(true)
                && let Ok(r) = pytorch_reader::PytorchReader::with_top_level_key(path, key)
                && !r.is_empty()
            {
                reader = Ok(r);
            }
        }
        let reader = reader.map_err(|e| bad(path, e.to_string()))?;
        let all: HashMap<String, pytorch_reader::Tensor> = reader.into_tensors();
        let mut tensors = BTreeMap::new();
        for (name, t) in all {
            use pytorch_reader::DType as D;
            let size = match t.dtype() {
                D::F32 | D::F64 | D::F16 | D::BF16 => t.dtype().size(),
                _ => continue,
            };
            let bytes = t.read().map_err(|e| bad(path, e.to_string()))?;
            if bytes.len() != t.num_elements() * size {
                return Err(bad(
                    path,
                    format!("tensor {name}: storage shorter than its shape"),
                ));
            }
            // the reader gives native-endian bytes; every platform HEAL builds for is little-endian
            let values = match t.dtype() {
                D::F32 => le_words::<4>(&bytes).map(f32::from_ne_bytes).collect(),
                D::F64 => le_words::<8>(&bytes)
                    .map(|w| f64::from_ne_bytes(w) as f32)
                    .collect(),
                D::F16 => le_words::<2>(&bytes)
                    .map(|w| half::f16::from_ne_bytes(w).to_f32())
                    .collect(),
                _ => le_words::<2>(&bytes)
                    .map(|w| half::bf16::from_ne_bytes(w).to_f32())
                    .collect(),
            };
            let shape = t.shape().to_vec();
            tensors.insert(name, NamedTensor { shape, values });
        }
        if tensors.is_empty() {
            return Err(bad(path, "no floating-point tensors in the file"));
        }
        Ok(Self {
            tensors,
            metadata: BTreeMap::new(),
        })
    }

    /// Writes the tensors as `f32` safetensors with the metadata (atomically: a temporary file
    /// renamed over the target).
    pub fn write_safetensors(&self, path: &Path) -> Result<(), TrainError> {
        let views: Vec<(String, F32View<'_>)> = self
            .tensors
            .iter()
            .map(|(n, t)| (n.clone(), F32View(t)))
            .collect();
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        let bytes =
            safetensors::serialize(views, Some(meta)).map_err(|e| bad(path, e.to_string()))?;
        let tmp = path.with_extension("safetensors.tmp");
        std::fs::write(&tmp, bytes).map_err(|e| TrainError::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| TrainError::io(path, e))
    }
}

/// A network's tensors by HEAL's names (`params.json`'s), with `metadata`: what
/// `client pretrain` and `client baseline` write, and `[model.init]` reads back.
pub fn weights_of<'a>(
    net: &crate::model::Network,
    metadata: impl IntoIterator<Item = (&'a str, String)>,
) -> Weights {
    let flat = crate::params::to_flat(net);
    let m = crate::params::manifest(&net.spec);
    let tensors = m
        .entries
        .iter()
        .map(|e| {
            let t = NamedTensor {
                shape: e.shape.clone(),
                values: flat[e.offset..e.offset + e.len].to_vec(),
            };
            (e.name.clone(), t)
        })
        .collect();
    let mut metadata: BTreeMap<String, String> = metadata
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    metadata.insert("format".into(), "heal-weights/1".into());
    metadata.insert("heal_version".into(), env!("CARGO_PKG_VERSION").into());
    Weights { tensors, metadata }
}

fn le_words<const W: usize>(data: &[u8]) -> impl Iterator<Item = [u8; W]> + '_ {
    data.chunks_exact(W).map(|c| {
        let mut w = [0u8; W];
        w.copy_from_slice(c);
        w
    })
}

struct F32View<'a>(&'a NamedTensor);

impl safetensors::View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        self.0
            .values
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>()
            .into()
    }
    fn data_len(&self) -> usize {
        self.0.values.len() * 4
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safetensors_round_trip_keeps_values_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.safetensors");
        let mut w = Weights::default();
        w.tensors.insert(
            "a.weight".into(),
            NamedTensor {
                shape: vec![2, 3],
                values: vec![1.0, -2.5, 3.0, 0.0, 1e-7, -1e7],
            },
        );
        w.metadata.insert("format".into(), "heal-backbone/1".into());
        w.write_safetensors(&path).unwrap();
        assert_eq!(Weights::read(&path).unwrap(), w);
    }

    #[test]
    fn unknown_extension_and_garbage_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.onnx");
        std::fs::write(&p, b"xx").unwrap();
        let e = Weights::read(&p).unwrap_err().to_string();
        assert!(e.contains("unknown weights format"), "{e}");
        for name in ["w.safetensors", "w.pt"] {
            let p = dir.path().join(name);
            std::fs::write(&p, [0xffu8; 64]).unwrap();
            assert!(Weights::read(&p).is_err(), "{name}");
        }
    }
}
