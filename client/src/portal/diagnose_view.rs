//! HTML of the Diagnose page, a diagnosis and the history.

use axum::response::Html;

use super::Portal;
use super::auth::SignedIn;
use super::history::Diagnosis;
use super::mode::{Mode, modes};
use super::pages::{Nav, esc, human_bytes, layout, utc};
use protocol::site::InferenceMode;

fn mode_text(portal: &Portal, mode: Mode) -> String {
    match mode {
        Mode::Local => format!(
            "On this node, with the released model <code>{}</code>: the image is encrypted \
             under a key made on this node for this request, the model is evaluated on the \
             ciphertext, and only this node can decrypt the answer (mode (b), evaluated on this node).",
            esc(portal.local().map_or("", |m| m.name.as_str()))
        ),
        Mode::Remote => {
            let remote = portal.config().remote.as_ref();
            let (server, pinned) = remote.map_or(("", InferenceMode::Released), |t| {
                (t.server.as_str(), t.accept.mode)
            });
            let how = match pinned {
                InferenceMode::Released => {
                    "only the encrypted image and public evaluation keys leave this node"
                }
                InferenceMode::Collective => {
                    "only the image encrypted under the consortium's collective key leaves this \
                     node; t keyholder hospitals re-encrypt the result to a key made here"
                }
            };
            format!(
                "At the consortium's inference server <code>{}</code>: {how}, over mutual-TLS \
                 QUIC; the server computes on the ciphertext and cannot read the image or the \
                 result. This site accepts only {pinned}: a server answering in another mode is \
                 refused.",
                esc(server)
            )
        }
    }
}

/// The Diagnose page (the landing page), with an optional error from the last upload.
pub fn diagnose(
    portal: &Portal,
    user: &SignedIn,
    error: Option<&str>,
    history: &[Diagnosis],
) -> Html<String> {
    let mut b = String::from("<h1>Diagnose an image</h1>");
    if let Some(e) = error {
        b.push_str(&format!(
            r#"<div class="error" role="alert" id="upload-error"><h2>The image was not diagnosed</h2><p>{}</p></div>"#,
            esc(e)
        ));
    }
    let limit_mb = portal.config().upload_limit as f64 / (1024.0 * 1024.0);
    b.push_str(&format!(
        r#"<form class="panel" method="post" action="/diagnose" enctype="multipart/form-data">
<input type="hidden" name="csrf" value="{}">
<label for="image">Image (PNG, JPEG or DICOM, at most {limit_mb:.0} MB)</label>
<input type="file" id="image" name="image" accept="image/png,image/jpeg,application/dicom,.dcm" required aria-describedby="image-hint">
<p class="hint" id="image-hint">The image is stored on this node for your history and is encrypted before anything is computed on it.</p>"#,
        esc(&user.csrf)
    ));
    let ms = modes(portal);
    if ms.len() > 1 {
        b.push_str("<fieldset><legend>Where the encrypted image is evaluated</legend>");
        for (i, m) in ms.iter().enumerate() {
            b.push_str(&format!(
                r#"<div><input type="radio" name="mode" id="mode-{0}" value="{0}"{1}> <label for="mode-{0}">{2}</label></div>"#,
                m.as_str(),
                if i == 0 { " checked" } else { "" },
                mode_text(portal, *m)
            ));
        }
        b.push_str("</fieldset>");
    } else if let Some(m) = ms.first() {
        b.push_str(&format!(
            r#"<input type="hidden" name="mode" value="{}"><p class="hint">{}</p>"#,
            m.as_str(),
            mode_text(portal, *m)
        ));
    }
    b.push_str(
        r#"<p class="hint">Mode (a), where the model itself stays encrypted under the consortium's key, is not available yet.</p>
<p><button type="submit" id="diagnose">Diagnose</button></p></form>"#,
    );
    if !history.is_empty() {
        b.push_str("<h2>Your recent diagnoses</h2>");
        b.push_str(&history_table(&history[..history.len().min(5)]));
        b.push_str(r#"<p><a href="/history">All of your history</a></p>"#);
    }
    layout("Diagnose", Nav::Diagnose, Some(&user.viewer()), &b)
}

fn history_table(list: &[Diagnosis]) -> String {
    let mut t = String::from(
        r#"<table id="history-table"><caption class="hint">Newest first</caption><thead><tr><th scope="col">When</th><th scope="col">Image</th><th scope="col">Result</th><th scope="col" class="num">Probability</th><th scope="col">Where</th></tr></thead><tbody>"#,
    );
    for d in list {
        t.push_str(&format!(
            r#"<tr><td><a href="/diagnosis/{}">{}</a></td><td>{}</td><td class="history-class">{}</td><td class="num">{:.1} %</td><td>{}</td></tr>"#,
            esc(&d.id),
            utc(d.unix_ms),
            esc(&d.file_name),
            esc(&d.class),
            d.probabilities.get(d.label).copied().unwrap_or(0.0) * 100.0,
            if d.mode == "local" { "this node" } else { "inference server" }
        ));
    }
    t.push_str("</tbody></table>");
    t
}

/// One diagnosis.
pub fn result(user: &SignedIn, d: &Diagnosis) -> Html<String> {
    let mut order: Vec<usize> = (0..d.probabilities.len()).collect();
    order.sort_by(|&a, &b| d.probabilities[b].total_cmp(&d.probabilities[a]));
    let mut bars = String::from(r#"<ul class="bars" aria-label="Class probabilities">"#);
    for &c in &order {
        let p = d.probabilities[c];
        let name = d.classes.get(c).map_or("?", String::as_str);
        bars.push_str(&format!(
            r#"<li{}><span id="class-{c}">{}</span><meter min="0" max="1" value="{p:.4}" aria-labelledby="class-{c}">{:.1} %</meter><span class="num">{:.1} %</span></li>"#,
            if c == d.label { r#" class="top""# } else { "" },
            esc(name),
            p * 100.0,
            p * 100.0
        ));
    }
    bars.push_str("</ul>");
    let agree = match d.plaintext_label {
        Some(l) if l == d.label => "<p>The same model evaluated on the unencrypted image on this node gives the same label.</p>".to_string(),
        Some(l) => format!(
            "<p><strong>Note:</strong> the model on the unencrypted image gives {} instead.</p>",
            esc(d.classes.get(l).map_or("?", String::as_str))
        ),
        None => String::new(),
    };
    let t = &d.timings;
    let where_ = match (d.mode == "local", d.inference) {
        (true, _) => {
            "Evaluated on this node (mode (b) evaluated on this node): the released model's weights are on this node, the image was encrypted under a key made for this request and evaluated as a ciphertext here."
        }
        (false, InferenceMode::Released) => {
            "Evaluated by the consortium's inference server (mode (b)): it received only the ciphertext and public evaluation keys over mutual-TLS QUIC, and sent back an encrypted result."
        }
        (false, InferenceMode::Collective) => {
            "Evaluated by the consortium's keyholder hospitals (mode (a)): the image was encrypted under the consortium's collective key and the request signed by this site; t hospitals each evaluated it with the model they hold and re-encrypted the result to this request's key."
        }
    };
    let encrypted_under = match d.inference {
        InferenceMode::Released => "under a secret key made on this node for this request",
        InferenceMode::Collective => {
            "under the consortium's collective public key (its secret exists nowhere: t of the hospitals together can only re-encrypt, never decrypt), and the result re-encrypted to a secret key made on this node for this request"
        }
    };
    let used = format!(
        "Mode used: <strong id=\"inference-mode\">{}</strong>.",
        d.inference
    );
    let left = if d.mode == "local" {
        format!(
            "Nothing left the hospital: 0 bytes. (Sent to a server, this request would be {} of public evaluation keys and {} of encrypted image.)",
            human_bytes(d.keys_bytes),
            human_bytes(d.image_bytes)
        )
    } else {
        format!(
            "{} left the hospital, all of it encrypted or public: {} of evaluation keys (public, they reveal nothing of the secret key) and {} of encrypted image; {} of encrypted result came back.",
            human_bytes(d.bytes_left),
            human_bytes(d.keys_bytes),
            human_bytes(d.image_bytes),
            human_bytes(d.result_bytes)
        )
    };
    let b = format!(
        r#"<h1>Diagnosis</h1>
<div class="panel result"><div class="grid">
<figure class="preview"><img src="/upload/{id}.{ext}" alt="The uploaded image {file}" width="168" height="168"><figcaption>{file}</figcaption></figure>
<div><p>Predicted label</p><p class="label-big" id="predicted-label" data-label="{label}">{class}</p>
<p class="hint">{when}</p>{agree}</div></div>
<h2>Class probabilities</h2>{bars}</div>
<h2>What was encrypted</h2>
<p>{used} The image was encrypted with CKKS homomorphic encryption (ring degree {n}) {encrypted_under}; the network was evaluated on the ciphertext, and only this node could decrypt the class scores. The unencrypted image and the result never left the node. {where_}</p>
<h2>What left the hospital</h2><p id="bytes-left">{left}</p>
<h2>Time</h2>
<table><tbody>
<tr><th scope="row">Keys (made for this request)</th><td class="num">{:.2} s</td></tr>
<tr><th scope="row">Encrypting the image</th><td class="num">{:.3} s</td></tr>
<tr><th scope="row">Sending</th><td class="num">{:.3} s</td></tr>
<tr><th scope="row">Evaluating on the ciphertext</th><td class="num">{:.3} s</td></tr>
<tr><th scope="row">Decrypting the result</th><td class="num">{:.3} s</td></tr>
<tr><th scope="row">Total</th><td class="num">{:.2} s</td></tr>
</tbody></table>
<p><a href="/diagnose">Diagnose another image</a> · <a href="/history">History</a></p>"#,
        t.setup_s,
        t.encrypt_s,
        t.send_s,
        t.evaluate_s,
        t.decrypt_s,
        t.total_s,
        id = esc(&d.id),
        ext = esc(super::upload::ImageKind::from_extension(&d.image_ext)
            .map_or(d.image_ext.as_str(), |k| k.preview_extension())),
        file = esc(&d.file_name),
        label = d.label,
        class = esc(&d.class),
        when = utc(d.unix_ms),
        n = d.ring_degree,
    );
    layout("Diagnosis", Nav::None, Some(&user.viewer()), &b)
}

/// The user's history.
pub fn history(user: &SignedIn, list: &[Diagnosis]) -> Html<String> {
    let mut b = String::from("<h1>Your history</h1>");
    if list.is_empty() {
        b.push_str(r#"<p>No diagnoses yet. <a href="/diagnose">Diagnose an image</a>.</p>"#);
    } else {
        b.push_str(&format!(
            "<p>{} diagnoses, stored on this node and shown only to you.</p>",
            list.len()
        ));
        b.push_str(&history_table(list));
    }
    layout("History", Nav::History, Some(&user.viewer()), &b)
}
