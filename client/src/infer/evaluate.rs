//! `client evaluate-encrypted`: the trained network over a whole split — of a MedMNIST set, or
//! of any data set a config's `[dataset]` describes (folders, manifests, DICOM) — encrypted and
//! in the clear, compared image by image: agreement of the predicted labels, accuracy and macro
//! AUC of both, logit errors, and the time of every step. Small images are encrypted in the
//! batched packing (one image per slot), large ones with the latency plan, image after image
//! ([`super::eval_runs`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use he_agg::infer::ParamPolicy;
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use tracing::info;

use super::batched_setup;
use super::error::InferenceError;
use super::eval_runs::{self, Packing, ParamSummary};
use super::eval_split::{EvalData, SplitImages, load_split};
use training::export::read_network;
use training::metrics::evaluate_probs;
use training::metrics::{argmax, softmax};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvaluateOptions {
    /// A `heal-network/1` file.
    pub network: PathBuf,
    /// The images: a MedMNIST set by name or a config's `[dataset]`.
    pub data: EvalData,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Only the first this many images.
    pub limit: Option<usize>,
    /// Images per batch (batched packing; at most one ciphertext's slots; default: all slots).
    pub batch: Option<usize>,
    /// MedMNIST directory (else `$HEAL_DATA_DIR`, else the cache).
    pub data_dir: Option<PathBuf>,
    pub progress: bool,
    pub policy: ParamPolicy,
    pub packing: Packing,
}

/// The comparison and its costs.
#[derive(Clone, Debug, Serialize)]
pub struct EvaluationReport {
    pub network: String,
    pub dataset: String,
    pub split: String,
    pub images: usize,
    /// `batched` or `per-image`.
    pub packing: Packing,
    /// Share of images whose encrypted prediction equals the plaintext one.
    pub agreement: f64,
    pub disagreements: usize,
    pub plaintext_accuracy: f64,
    pub encrypted_accuracy: f64,
    pub plaintext_auc: f64,
    pub encrypted_auc: f64,
    pub auc_difference: f64,
    pub max_abs_logit_error: f64,
    pub mean_abs_logit_error: f64,
    pub depth: usize,
    pub parameters: ParamSummary,
    pub batch_size: usize,
    pub batches: usize,
    pub threads: usize,
    pub keygen_s: f64,
    pub plaintext_s: f64,
    pub encrypt_s: f64,
    pub evaluate_s: f64,
    pub decrypt_s: f64,
    pub total_s: f64,
    /// Images per second of the encrypted evaluation alone.
    pub images_per_s: f64,
    /// Images per second including encoding, encryption, decryption and decoding.
    pub end_to_end_images_per_s: f64,
    /// Mean seconds per full batch, end to end (encrypt + evaluate + decrypt).
    pub batch_latency_s: f64,
    /// Bytes a remote request would carry per image (seeded ciphertexts, batched layout).
    pub request_bytes_per_image: f64,
    /// Bytes of one batch's encrypted logits.
    pub response_bytes_per_batch: usize,
    /// Median seconds per image end to end (per-image packing; per batch when batched).
    pub latency_s: f64,
    /// Evaluation keys a requester sends once per connection.
    pub eval_key_bytes: usize,
    /// Refresh round trips per image (a deep model cut into segments) and their bytes per
    /// image, both ways.
    pub refreshes: usize,
    pub refresh_bytes_per_image: f64,
}

impl EvaluationReport {
    /// A short human-readable summary.
    pub fn render(&self) -> String {
        format!(
            "{} images of {} {} ({}), {} encryption (N = {}, scale 2^{}, depth {}, {} \
             batches of up to {}, {} threads)\n\
             agreement with the plaintext network: {:.4}% ({} differ); max |logit error| {:.2e}\n\
             accuracy: plaintext {:.4}, encrypted {:.4}\n\
             AUC: plaintext {:.5}, encrypted {:.5} (difference {:.1e})\n\
             time: keys {:.2} s, encrypt {:.2} s, evaluate {:.2} s, decrypt {:.2} s, plaintext \
             {:.2} s; {:.1} images/s evaluated, {:.1} images/s end to end, {:.2} s per batch\n\
             sizes: {:.1} KB per image up, {:.2} MB per batch down, {:.1} MB of keys once; \
             {} refreshes per image ({:.2} MB per image both ways)",
            self.images,
            self.dataset,
            self.split,
            self.network,
            match self.packing {
                Packing::PerImage => "per-image",
                _ => "batched",
            },
            self.parameters.n,
            self.parameters.log_scale,
            self.depth,
            self.batches,
            self.batch_size,
            self.threads,
            self.agreement * 100.0,
            self.disagreements,
            self.max_abs_logit_error,
            self.plaintext_accuracy,
            self.encrypted_accuracy,
            self.plaintext_auc,
            self.encrypted_auc,
            self.auc_difference,
            self.keygen_s,
            self.encrypt_s,
            self.evaluate_s,
            self.decrypt_s,
            self.plaintext_s,
            self.images_per_s,
            self.end_to_end_images_per_s,
            self.batch_latency_s,
            self.request_bytes_per_image / 1e3,
            self.response_bytes_per_batch as f64 / 1e6,
            self.eval_key_bytes as f64 / 1e6,
            self.refreshes,
            self.refresh_bytes_per_image / 1e6,
        )
    }
}

fn bar(len: usize, show: bool, what: &str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:>10} [{elapsed_precise}] {wide_bar} {pos}/{len} images ({per_sec}, eta {eta})",
    ) {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// Runs the comparison.
pub fn evaluate_encrypted(opts: &EvaluateOptions) -> Result<EvaluationReport, InferenceError> {
    let start = Instant::now();
    let (file, prep) = read_network(&opts.network)?;
    let net = file.network;
    // before reading any image: a packing that cannot hold this network is refused at once
    let mut packing = opts.packing.resolve(&net)?;
    let setup = match packing {
        Packing::Batched => batched_setup::choose(
            opts.packing,
            &net,
            &opts.policy,
            he_agg::alloc::available_memory(),
        )?,
        _ => None,
    };
    if setup.is_none() {
        packing = Packing::PerImage;
    }
    let SplitImages {
        pixels,
        labels,
        dataset,
    } = load_split(
        &opts.data,
        &opts.split,
        opts.limit,
        &net,
        &prep,
        opts.data_dir.as_deref(),
        opts.progress,
    )?;
    let n = pixels.len();
    if n == 0 {
        return Err(InferenceError::Usage("no images to evaluate".into()));
    }
    let inputs: Vec<Vec<f32>> = pixels
        .par_iter()
        .map(|p| net.normalize_hwc(p))
        .collect::<Result<_, _>>()?;
    drop(pixels);
    let k = net.output_len();

    // ---- plaintext ----
    let t = Instant::now();
    let plain: Vec<Vec<f32>> = inputs
        .par_iter()
        .map(|x| net.forward(x))
        .collect::<Result<_, _>>()?;
    let plaintext_s = t.elapsed().as_secs_f64();

    // ---- encrypted ----
    info!(images = n, ?packing, "encrypted evaluation");
    let pb = bar(n, opts.progress, "encrypted");
    let run = match setup {
        Some(setup) => eval_runs::batched(setup, &inputs, opts.batch, &pb)?,
        None => eval_runs::per_image(&net, &inputs, &opts.policy, &pb)?,
    };
    pb.finish_and_clear();

    // ---- comparison ----
    let (mut disagreements, mut max_err, mut sum_err) = (0usize, 0f64, 0f64);
    let mut probs_plain = Vec::with_capacity(n * k);
    let mut probs_enc = Vec::with_capacity(n * k);
    for (p, e) in plain.iter().zip(&run.logits) {
        let p64: Vec<f64> = p.iter().map(|&v| v as f64).collect();
        if argmax(&p64) != argmax(e) {
            disagreements += 1;
        }
        for (a, b) in p64.iter().zip(e) {
            let d = (a - b).abs();
            max_err = max_err.max(d);
            sum_err += d;
        }
        probs_plain.extend(softmax(&p64).iter().map(|&v| v as f32));
        probs_enc.extend(softmax(e).iter().map(|&v| v as f32));
    }
    let rp = evaluate_probs(&probs_plain, &labels, &file.class_names)?;
    let re = evaluate_probs(&probs_enc, &labels, &file.class_names)?;
    let total_s = start.elapsed().as_secs_f64();
    let fhe_s = run.encrypt_s + run.evaluate_s + run.decrypt_s;
    Ok(EvaluationReport {
        network: opts.network.display().to_string(),
        dataset,
        split: opts.split.clone(),
        images: n,
        packing: run.packing,
        agreement: 1.0 - disagreements as f64 / n as f64,
        disagreements,
        plaintext_accuracy: rp.accuracy,
        encrypted_accuracy: re.accuracy,
        plaintext_auc: rp.macro_auc,
        encrypted_auc: re.macro_auc,
        auc_difference: (rp.macro_auc - re.macro_auc).abs(),
        max_abs_logit_error: max_err,
        mean_abs_logit_error: sum_err / (n * k) as f64,
        depth: run.depth,
        parameters: run.parameters,
        batch_size: run.batch_size,
        batches: run.batches,
        threads: rayon::current_num_threads(),
        keygen_s: run.keygen_s,
        plaintext_s,
        encrypt_s: run.encrypt_s,
        evaluate_s: run.evaluate_s,
        decrypt_s: run.decrypt_s,
        total_s,
        images_per_s: n as f64 / run.evaluate_s,
        end_to_end_images_per_s: n as f64 / fhe_s,
        batch_latency_s: fhe_s / run.batches as f64,
        request_bytes_per_image: run.request_bytes_per_image,
        response_bytes_per_batch: run.response_bytes_per_batch,
        latency_s: run.latency_s,
        eval_key_bytes: run.eval_key_bytes,
        refreshes: run.refreshes,
        refresh_bytes_per_image: run.refresh_bytes_per_image,
    })
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &EvaluationReport, path: &Path) -> Result<(), InferenceError> {
    let text = serde_json::to_string_pretty(report).map_err(|source| {
        training::error::TrainError::Json {
            path: path.to_path_buf(),
            source,
        }
    })?;
    std::fs::write(path, text)
        .map_err(|e| training::error::TrainError::Io {
            path: path.to_path_buf(),
            source: e,
        })
        .map_err(Into::into)
}
