//! `[model.init]`: a network's first weights from a pretrained backbone's file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::layout::{Source, is_activation, sources};
use super::weights::Weights;
use crate::error::TrainError;
use crate::model::{HeadInit, InitConfig, LayerKind, Network, NetworkSpec};
use crate::params::{ParamEntry, manifest, network_from_flat, to_flat};

/// What loading a backbone did, for logs and `summary.json`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InitReport {
    /// The weights file.
    pub path: PathBuf,
    /// BLAKE3 of the file's bytes (hex).
    pub blake3: String,
    /// Values taken from the file.
    pub loaded_values: usize,
    /// Manifest entries taken from the file.
    pub loaded: usize,
    /// Entries left at their initial values (a replaced head, polynomial coefficients).
    pub initial: Vec<String>,
    /// Entries set to a constant (batch norms the layout does not have, made the identity).
    pub filled: Vec<String>,
    /// Entries adapted from another number of input channels (grey ↔ RGB), with how.
    pub adapted: Vec<String>,
    /// The file's tensors no entry read (activation coefficients of another network, a
    /// replaced head).
    pub ignored: Vec<String>,
    /// The file's metadata (a HEAL backbone's provenance).
    pub metadata: std::collections::BTreeMap<String, String>,
    /// Layers not trained (`freeze`).
    pub frozen_layers: usize,
}

fn bad(path: &Path, message: impl Into<String>) -> TrainError {
    TrainError::Weights {
        path: path.into(),
        message: message.into(),
    }
}

/// The layer index a manifest entry's name starts with.
fn layer_of(name: &str) -> usize {
    name.split('.')
        .next()
        .and_then(|l| l.parse().ok())
        .unwrap_or(usize::MAX)
}

/// The names of the last dense layer's entries (the head).
fn head_entries(spec: &NetworkSpec, entries: &[ParamEntry]) -> BTreeSet<String> {
    let last = spec
        .layers
        .iter()
        .rposition(|l| matches!(l.kind, LayerKind::Dense { .. }));
    let prefix = last.map(|i| format!("{i}.dense."));
    entries
        .iter()
        .filter(|e| prefix.as_ref().is_some_and(|p| e.name.starts_with(p)))
        .map(|e| e.name.clone())
        .collect()
}

/// The values of `want` (an entry of shape `shape`) from the file's tensor `found` of shape
/// `have`: equal shapes are taken as they are; a first convolution's input channels are
/// adapted (3 → 1: summed, as for grey images with R = G = B; 1 → c: repeated and divided
/// by c), as timm's `adapt_input_conv` does.
fn fit(
    name: &str,
    shape: &[usize],
    have: &[usize],
    values: &[f32],
    first_conv: bool,
) -> Result<(Vec<f32>, Option<String>), String> {
    if have == shape {
        return Ok((values.to_vec(), None));
    }
    if first_conv
        && have.len() == 4
        && shape.len() == 4
        && have[0] == shape[0]
        && have[2..] == shape[2..]
    {
        let (o, ci, co, kk) = (shape[0], have[1], shape[1], shape[2] * shape[3]);
        let mut out = vec![0f32; o * co * kk];
        for oc in 0..o {
            for c in 0..co {
                for k in 0..kk {
                    out[(oc * co + c) * kk + k] = if co == 1 {
                        (0..ci).map(|s| values[(oc * ci + s) * kk + k]).sum()
                    } else if ci == 1 {
                        values[oc * kk + k] / co as f32
                    } else {
                        return Err(format!(
                            "{name}: the file's first convolution reads {ci} channels, the network {co} \
                             (only 1 ↔ many is adapted)"
                        ));
                    };
                }
            }
        }
        return Ok((out, Some(format!("{name}: {ci} → {co} input channels"))));
    }
    Err(format!(
        "{name}: the file's tensor is {have:?}, the network needs {shape:?}"
    ))
}

/// The network `spec` describes with its first weights from `init` (relative paths against
/// `base_dir`), its first `freeze` layers taken out of training, on `device`.
pub fn load_init(
    spec: &NetworkSpec,
    init: &InitConfig,
    base_dir: &Path,
    device: &Device,
) -> Result<(Network, InitReport), TrainError> {
    let path = if init.path.is_absolute() {
        init.path.clone()
    } else {
        base_dir.join(&init.path)
    };
    let bytes_digest = blake3::hash(&std::fs::read(&path).map_err(|e| TrainError::io(&path, e))?)
        .to_hex()
        .to_string();
    if let Some(want) = &init.blake3
        && !want.eq_ignore_ascii_case(&bytes_digest)
    {
        return Err(bad(
            &path,
            format!(
                "BLAKE3 {bytes_digest}, but [model.init] blake3 says {want}: not the agreed backbone"
            ),
        ));
    }
    let weights = Weights::read(&path)?;
    let m = manifest(spec);
    let mut srcs = sources(spec, init.layout)?;
    let head = head_entries(spec, &m.entries);
    if init.head == HeadInit::Replace {
        for (e, s) in m.entries.iter().zip(srcs.iter_mut()) {
            if head.contains(&e.name) {
                *s = Source::Initial;
            }
        }
    }
    if let Some(n) = init.layers {
        if n > spec.layers.len() {
            return Err(bad(
                &path,
                format!(
                    "[model.init] layers = {n}, but the network has {} layers",
                    spec.layers.len()
                ),
            ));
        }
        for (e, s) in m.entries.iter().zip(srcs.iter_mut()) {
            if layer_of(&e.name) >= n {
                *s = Source::Initial;
            }
        }
    }
    let first_conv = m.entries.first().map(|e| e.name.clone());
    let mut flat = to_flat(&Network::init(spec, device));
    let mut report = InitReport {
        path: path.clone(),
        blake3: bytes_digest,
        metadata: weights.metadata.clone(),
        frozen_layers: spec.frozen,
        ..InitReport::default()
    };
    let mut used = BTreeSet::new();
    let mut errors = Vec::new();
    for (e, s) in m.entries.iter().zip(&srcs) {
        let slot = &mut flat[e.offset..e.offset + e.len];
        let found = s
            .name()
            .and_then(|n| weights.tensors.get(n).map(|t| (n, t)));
        match (s, found) {
            (Source::Fill(v), _) => {
                slot.fill(*v);
                report.filled.push(e.name.clone());
            }
            (Source::Initial, _) | (Source::NamedOrInitial(_), None) => {
                report.initial.push(e.name.clone())
            }
            (Source::NamedOrZeros(_), None) => slot.fill(0.0),
            (Source::Named(n), None) => {
                errors.push(format!("{n} (for {}) is not in the file", e.name))
            }
            (_, Some((n, t))) => {
                used.insert(n.to_string());
                let is_first = first_conv.as_deref() == Some(e.name.as_str());
                match fit(n, &e.shape, &t.shape, &t.values, is_first) {
                    Ok((v, adapted)) => {
                        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                            errors.push(format!("{n}: value {i} is {}", v[i]));
                            continue;
                        }
                        slot.copy_from_slice(&v);
                        report.loaded += 1;
                        report.loaded_values += v.len();
                        report.adapted.extend(adapted);
                    }
                    Err(m) if head.contains(&e.name) => errors.push(format!(
                        "{m}: the backbone was trained for other classes; set [model.init] \
                         head = \"replace\""
                    )),
                    Err(m) => errors.push(m),
                }
            }
        }
    }
    // a file with more than the network reads is most likely another network (a ResNet-34
    // given to a ResNet-18 config): refused, naming what was left over
    let replaced_head: BTreeSet<String> = match init.layout {
        crate::model::WeightsLayout::Heal => head.clone(),
        crate::model::WeightsLayout::Torchvision => {
            ["fc.weight".to_string(), "fc.bias".to_string()].into()
        }
    };
    let mut unexpected = Vec::new();
    for name in weights.tensors.keys().filter(|n| !used.contains(*n)) {
        let cut_short = init.layers.is_some();
        if cut_short
            || is_activation(name)
            || (init.head == HeadInit::Replace && replaced_head.contains(name))
        {
            report.ignored.push(name.clone());
        } else {
            unexpected.push(name.clone());
        }
    }
    if !unexpected.is_empty() {
        let more = unexpected.len().saturating_sub(6);
        errors.push(format!(
            "{} tensors the network has no place for: {}{} (another architecture than [[model.layers]]?)",
            unexpected.len(),
            unexpected[..unexpected.len().min(6)].join(", "),
            if more > 0 { format!(" and {more} more") } else { String::new() }
        ));
    }
    if !errors.is_empty() {
        let n = errors.len();
        errors.truncate(8);
        return Err(bad(
            &path,
            format!(
                "does not fit the network ({n} problems): {}",
                errors.join("; ")
            ),
        ));
    }
    let net = network_from_flat(spec, &flat, device)?.freeze_front();
    Ok((net, report))
}

/// The network a run starts from: `[model.init]`'s backbone when the config names one, else
/// fresh weights from `init_seed`.
pub fn initial_network(
    spec: &NetworkSpec,
    init: Option<&InitConfig>,
    base_dir: &Path,
    device: &Device,
) -> Result<(Network, Option<InitReport>), TrainError> {
    match init {
        Some(init) => {
            let (net, report) = load_init(spec, init, base_dir, device)?;
            tracing::info!(
                path = %report.path.display(),
                blake3 = %report.blake3,
                loaded = report.loaded,
                values = report.loaded_values,
                initial = report.initial.len(),
                adapted = ?report.adapted,
                ignored = report.ignored.len(),
                frozen_layers = report.frozen_layers,
                "started from a pretrained backbone"
            );
            Ok((net, Some(report)))
        }
        None => Ok((Network::init(spec, device).freeze_front(), None)),
    }
}
