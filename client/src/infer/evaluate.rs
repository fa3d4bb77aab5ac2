//! `client evaluate-encrypted`: the trained network over a whole split, encrypted in the
//! batched packing (one image per slot, N/2 images per ciphertext) and in the clear, compared
//! image by image: agreement of the predicted labels, accuracy and macro AUC of both, logit
//! errors, and the time of every step.

use std::path::{Path, PathBuf};
use std::time::Instant;

use datasets::medmnist::{self, MedMnistOptions};
use he_agg::ckks::{Ciphertext, CkksContext, wire};
use he_agg::infer::{BatchedModel, BatchedSpec, Network, ParamPolicy};
use indicatif::{ProgressBar, ProgressStyle};
use rayon::prelude::*;
use serde::Serialize;
use tracing::info;

use super::error::InferenceError;
use crate::export::read_network;
use crate::metrics::evaluate_probs;
use crate::metrics::{argmax, softmax};

/// What to evaluate.
#[derive(Clone, Debug)]
pub struct EvaluateOptions {
    /// A `heal-network/1` export.
    pub network: PathBuf,
    /// MedMNIST data set name.
    pub dataset: String,
    /// `train`, `val` or `test`.
    pub split: String,
    /// Only the first this many images.
    pub limit: Option<usize>,
    /// Images per batch (at most one ciphertext's slots; default: all slots).
    pub batch: Option<usize>,
    /// MedMNIST directory (else `$HEAL_DATA_DIR`, else the cache).
    pub data_dir: Option<PathBuf>,
    pub progress: bool,
    pub policy: ParamPolicy,
}

/// The parameters used, for the report.
#[derive(Clone, Debug, Serialize)]
pub struct ParamSummary {
    pub n: usize,
    pub log_scale: f64,
    pub q_bits: Vec<u32>,
    pub p_bits: Vec<u32>,
    pub log_qp: f64,
}

/// The comparison and its costs.
#[derive(Clone, Debug, Serialize)]
pub struct EvaluationReport {
    pub network: String,
    pub dataset: String,
    pub split: String,
    pub images: usize,
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
}

impl EvaluationReport {
    /// A short human-readable summary.
    pub fn render(&self) -> String {
        format!(
            "{} images of {} {} ({}), batched encryption (N = {}, scale 2^{}, depth {}, {} \
             batches of up to {}, {} threads)\n\
             agreement with the plaintext network: {:.4}% ({} differ); max |logit error| {:.2e}\n\
             accuracy: plaintext {:.4}, encrypted {:.4}\n\
             AUC: plaintext {:.5}, encrypted {:.5} (difference {:.1e})\n\
             time: keys {:.2} s, encrypt {:.2} s, evaluate {:.2} s, decrypt {:.2} s, plaintext \
             {:.2} s; {:.0} images/s evaluated, {:.0} images/s end to end, {:.2} s per batch\n\
             sizes: {:.1} KB per image up, {:.1} MB per batch down",
            self.images,
            self.dataset,
            self.split,
            self.network,
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
        )
    }
}

fn summary(ctx: &CkksContext) -> ParamSummary {
    let bits = |v: &[u64]| -> Vec<u32> { v.iter().map(|&q| 64 - q.leading_zeros()).collect() };
    let p = ctx.params();
    ParamSummary {
        n: p.n(),
        log_scale: p.log_scale(),
        q_bits: bits(p.rlwe().q()),
        p_bits: bits(p.rlwe().p()),
        log_qp: p.rlwe().log_qp() as f64,
    }
}

/// The split's images (HWC bytes) and labels.
fn load_split(
    opts: &EvaluateOptions,
    net: &Network,
) -> Result<(Vec<Vec<u8>>, Vec<u32>), InferenceError> {
    let [c, h, w] = net.input();
    let mo = MedMnistOptions {
        data_dir: opts.data_dir.clone(),
        progress: opts.progress,
        ..Default::default()
    };
    let ds = medmnist::load(&opts.dataset, h as u32, &mo)?;
    let set = match opts.split.as_str() {
        "train" => &ds.train,
        "val" => &ds.val,
        "test" => &ds.test,
        other => {
            return Err(InferenceError::Usage(format!(
                "split {other:?}: train, val or test"
            )));
        }
    };
    if (set.channels(), set.height(), set.width()) != (c, h, w) {
        return Err(InferenceError::Usage(format!(
            "{} has {}×{}×{} images, the network takes {c}×{h}×{w}",
            opts.dataset,
            set.channels(),
            set.height(),
            set.width()
        )));
    }
    let n = opts.limit.unwrap_or(set.len()).min(set.len());
    let labels = set.class_labels()?[..n].to_vec();
    Ok((
        (0..n).map(|i| set.image_bytes(i).to_vec()).collect(),
        labels,
    ))
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
    let (exp, _) = read_network(&opts.network)?;
    let net = exp.network.clone();
    let (pixels, labels) = load_split(opts, &net)?;
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

    // ---- encrypted, batched ----
    let t = Instant::now();
    let spec = BatchedSpec::new(&net, &opts.policy)?;
    let ctx = CkksContext::new(spec.parameters().clone())?;
    let model = BatchedModel::new(&net, &ctx)?;
    let mut kg = ctx
        .key_generator()
        .map_err(|e| InferenceError::Rng(e.to_string()))?;
    let sk = kg.secret_key();
    let rlk = spec
        .needs_relinearization()
        .then(|| kg.relinearization_key(&sk));
    let eval = ctx.evaluator(rlk.as_ref(), None)?;
    let keygen_s = t.elapsed().as_secs_f64();
    let batch = opts
        .batch
        .unwrap_or(spec.batch_size())
        .clamp(1, spec.batch_size());
    info!(
        images = n,
        batch,
        n = ctx.n(),
        depth = spec.depth(),
        "encrypted evaluation (batched)"
    );
    let pb = bar(n, opts.progress, "encrypted");
    let (mut encrypt_s, mut evaluate_s, mut decrypt_s) = (0.0, 0.0, 0.0);
    let mut encrypted: Vec<Vec<f64>> = Vec::with_capacity(n);
    let dec = ctx.decryptor(&sk)?;
    ctx.sk_encryptor(&sk)?;
    for chunk in inputs.chunks(batch) {
        let refs: Vec<&[f32]> = chunk.iter().map(Vec::as_slice).collect();
        let t0 = Instant::now();
        let cts: Vec<Ciphertext> = spec
            .encode_inputs(&ctx, &refs)?
            .par_iter()
            .map_init(
                || ctx.sk_encryptor(&sk).ok(),
                |enc, pt| enc.as_mut().map(|e| e.encrypt(pt)),
            )
            .collect::<Option<_>>()
            .ok_or_else(|| InferenceError::Rng("cannot make an encryptor".into()))?;
        let t1 = Instant::now();
        let outs = model.evaluate(&eval, &cts)?;
        drop(cts);
        let t2 = Instant::now();
        let pts: Vec<_> = outs.par_iter().map(|c| dec.decrypt(c)).collect();
        encrypted.extend(spec.decode_outputs(&ctx, &pts, chunk.len())?);
        let t3 = Instant::now();
        encrypt_s += (t1 - t0).as_secs_f64();
        evaluate_s += (t2 - t1).as_secs_f64();
        decrypt_s += (t3 - t2).as_secs_f64();
        pb.inc(chunk.len() as u64);
    }
    pb.finish_and_clear();
    let batches = n.div_ceil(batch);

    // ---- comparison ----
    let (mut disagreements, mut max_err, mut sum_err) = (0usize, 0f64, 0f64);
    let mut probs_plain = Vec::with_capacity(n * k);
    let mut probs_enc = Vec::with_capacity(n * k);
    for (p, e) in plain.iter().zip(&encrypted) {
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
    let rp = evaluate_probs(&probs_plain, &labels, &exp.class_names)?;
    let re = evaluate_probs(&probs_enc, &labels, &exp.class_names)?;
    let total_s = start.elapsed().as_secs_f64();
    let fhe_s = encrypt_s + evaluate_s + decrypt_s;
    Ok(EvaluationReport {
        network: opts.network.display().to_string(),
        dataset: opts.dataset.clone(),
        split: opts.split.clone(),
        images: n,
        agreement: 1.0 - disagreements as f64 / n as f64,
        disagreements,
        plaintext_accuracy: rp.accuracy,
        encrypted_accuracy: re.accuracy,
        plaintext_auc: rp.macro_auc,
        encrypted_auc: re.macro_auc,
        auc_difference: (rp.macro_auc - re.macro_auc).abs(),
        max_abs_logit_error: max_err,
        mean_abs_logit_error: sum_err / (n * k) as f64,
        depth: spec.depth(),
        parameters: summary(&ctx),
        batch_size: batch,
        batches,
        threads: rayon::current_num_threads(),
        keygen_s,
        plaintext_s,
        encrypt_s,
        evaluate_s,
        decrypt_s,
        total_s,
        images_per_s: n as f64 / evaluate_s,
        end_to_end_images_per_s: n as f64 / fhe_s,
        batch_latency_s: fhe_s / batches as f64,
        request_bytes_per_image: (spec.input_len()
            * wire::seeded_ciphertext_len(&ctx, spec.input_level()))
            as f64
            / batch as f64,
        response_bytes_per_batch: spec.output_len() * wire::ciphertext_len(&ctx, 1, 1),
    })
}

/// Writes the report as pretty JSON.
pub fn write_json(report: &EvaluationReport, path: &Path) -> Result<(), InferenceError> {
    let text =
        serde_json::to_string_pretty(report).map_err(|source| crate::error::ClientError::Json {
            path: path.to_path_buf(),
            source,
        })?;
    std::fs::write(path, text)
        .map_err(|e| crate::error::ClientError::Io {
            path: path.to_path_buf(),
            source: e,
        })
        .map_err(Into::into)
}
