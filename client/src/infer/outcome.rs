//! What `client infer` reports: per image the class probabilities and label, and for the
//! request the timings and the bytes on the wire.

use std::fmt::Write as _;

use serde::Serialize;

/// One image's result.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    pub image: String,
    /// Predicted class (arg-max of the decrypted logits).
    pub label: usize,
    pub class: String,
    pub probabilities: Vec<f64>,
    pub logits: Vec<f64>,
    /// The image's label in its data set, when it came from one.
    pub true_label: Option<usize>,
    /// The plaintext network's label (only with `--local`, where the weights are at hand).
    pub plaintext_label: Option<usize>,
}

/// Seconds per step (for all images of the request together).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Timings {
    /// Compiling the plan and generating the keys.
    pub setup_s: f64,
    pub encrypt_s: f64,
    /// Sending the keys and the encrypted images.
    pub send_s: f64,
    /// Of `send_s`, the encrypted images' part (each request's upload, keys not included).
    #[serde(default)]
    pub images_send_s: f64,
    /// Evaluation, as the server measured it.
    pub evaluate_s: f64,
    /// From the end of the upload to the whole result received (evaluation included).
    pub wait_s: f64,
    pub decrypt_s: f64,
    pub total_s: f64,
}

/// Bytes on the wire (frames included).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sizes {
    pub keys_sent: u64,
    pub images_sent: u64,
    pub results_received: u64,
    /// Masked ciphertexts received and refreshed ones sent back (a deep model's segments).
    #[serde(default)]
    pub refresh_received: u64,
    #[serde(default)]
    pub refresh_sent: u64,
    /// Refresh round trips.
    #[serde(default)]
    pub refreshes: u64,
    /// Requests sent (each of at most the server's `max_images` images).
    #[serde(default)]
    pub requests: u64,
}

/// A whole request's outcome.
#[derive(Clone, Debug, Serialize)]
pub struct InferOutcome {
    /// `local` or `remote`.
    pub mode: String,
    /// How the image was served: released (mode b: under a key made by the requester) or
    /// collective (mode a: under the consortium's collective key, switched to the requester).
    pub inference: protocol::site::InferenceMode,
    pub model: String,
    pub ring_degree: usize,
    pub depth: usize,
    pub galois_keys: usize,
    /// The plan's fingerprint (hex): the model, its parameters and layout, as the server's.
    pub fingerprint: String,
    pub classes: Vec<String>,
    pub images: Vec<ImageResult>,
    pub timings: Timings,
    pub bytes: Sizes,
}

impl InferOutcome {
    /// A human-readable report.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "model {} ({}, {}; N = {}, depth {}, {} Galois keys)",
            self.model, self.mode, self.inference, self.ring_degree, self.depth, self.galois_keys
        );
        for r in &self.images {
            let mut order: Vec<usize> = (0..r.probabilities.len()).collect();
            order.sort_by(|&a, &b| r.probabilities[b].total_cmp(&r.probabilities[a]));
            let _ = write!(s, "{}: {} (class {})", r.image, r.class, r.label);
            if let Some(t) = r.true_label {
                let name = self.classes.get(t).map_or("?", String::as_str);
                let _ = write!(s, ", true label {name} ({t})");
            }
            if let Some(p) = r.plaintext_label {
                let _ = write!(
                    s,
                    ", plaintext network: {}",
                    if p == r.label { "same" } else { "DIFFERENT" }
                );
            }
            let _ = writeln!(s);
            for &c in order.iter().take(5) {
                let _ = writeln!(
                    s,
                    "    {:<16} {:>7.4}",
                    self.classes.get(c).map_or("?", String::as_str),
                    r.probabilities[c]
                );
            }
        }
        let t = &self.timings;
        let _ = writeln!(
            s,
            "time: setup (plan + keys) {:.3} s, encrypt {:.3} s, send {:.3} s, evaluate {:.3} s \
             (wait {:.3} s), decrypt {:.3} s; total {:.3} s for {} image(s)",
            t.setup_s,
            t.encrypt_s,
            t.send_s,
            t.evaluate_s,
            t.wait_s,
            t.decrypt_s,
            t.total_s,
            self.images.len()
        );
        let b = &self.bytes;
        let _ = writeln!(
            s,
            "bytes: sent {:.1} MB of keys + {:.1} KB of images ({:.1} KB each), received {:.1} KB",
            b.keys_sent as f64 / 1e6,
            b.images_sent as f64 / 1e3,
            b.images_sent as f64 / 1e3 / self.images.len().max(1) as f64,
            b.results_received as f64 / 1e3
        );
        s
    }
}

impl ImageResult {
    /// From decrypted logits.
    pub fn from_logits(
        image: String,
        logits: Vec<f64>,
        classes: &[String],
        true_label: Option<usize>,
        plaintext_label: Option<usize>,
    ) -> Self {
        let probabilities = training::metrics::softmax(&logits);
        let label = training::metrics::argmax(&logits);
        Self {
            image,
            label,
            class: classes
                .get(label)
                .cloned()
                .unwrap_or_else(|| format!("class-{label}")),
            probabilities,
            logits,
            true_label,
            plaintext_label,
        }
    }
}
