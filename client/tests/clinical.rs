//! A user's 256×256 CT set end to end, with no code: a CSV manifest of DICOM slices →
//! `client baseline` with the shipped `configs/baseline-ct256.toml` (only its manifest path
//! changed) → `client evaluate-encrypted --config` on the test split → `client infer --local`
//! on a `.dcm` file. The encrypted labels must equal the plaintext network's.

use std::path::Path;
use std::process::Command;

fn client(args: &[&str], paths: &[&Path]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_client"))
        .arg("--quiet")
        .args(args)
        .args(paths)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "client {args:?} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn ct256_dicom_manifest_trains_and_diagnoses_encrypted() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let classes = ["normal", "cyst", "tumor"];
    std::fs::create_dir(dir.join("scans")).unwrap();
    let mut csv = String::from("path,label\n");
    for i in 0..30u32 {
        let class = (i % 3) as usize;
        let patient = format!("P{:02}", i / 3);
        let bytes = datasets::dicom_writer::ct_slice(
            256,
            256,
            &datasets::dicom_writer::synthetic_hu(256, class, i),
            Some(&patient),
        )
        .unwrap();
        let name = format!("scans/ct{i:02}.dcm");
        std::fs::write(dir.join(&name), bytes).unwrap();
        csv.push_str(&format!("{name},{}\n", classes[class]));
    }
    std::fs::write(dir.join("manifest.csv"), csv).unwrap();

    // the shipped config, its manifest path set (the only edit a user makes)
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/baseline-ct256.toml");
    let text = std::fs::read_to_string(&shipped).unwrap();
    let marker = "path = \"ct256/manifest.csv\"";
    assert!(
        text.contains(marker),
        "baseline-ct256.toml changed its path line"
    );
    let config = dir.join("ct256.toml");
    std::fs::write(&config, text.replace(marker, "path = \"manifest.csv\"")).unwrap();

    let out = dir.join("out");
    client(&["baseline", "--epochs", "2", "--out"], &[&out, &config]);
    let net = out.join("network.json");
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["he_friendly"], true, "{summary}");
    // the window and resize policy travel with the network
    let file = he_agg::infer::NetworkFile::read_json(&net).unwrap();
    let prep = file.input_preparation.expect("input preparation recorded");
    assert_eq!(prep["window"], "kidney", "{prep}");
    assert_eq!(prep["resize"], "crop", "{prep}");

    // encrypted over the test split (image by image at this size), labels equal plaintext ones
    let report = dir.join("eval.json");
    client(
        &["evaluate-encrypted", "--limit", "3", "--network"],
        &[
            &net,
            Path::new("--config"),
            &config,
            Path::new("--json"),
            &report,
        ],
    );
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["packing"], "per-image", "{r}");
    assert_eq!(r["images"], 3, "{r}");
    assert_eq!(r["disagreements"], 0, "{r}");
    assert!(r["max_abs_logit_error"].as_f64().unwrap() < 0.05, "{r}");

    // one .dcm diagnosed locally under encryption, equal to the plaintext network
    let json = dir.join("infer.json");
    client(
        &["infer", "--local", "--network"],
        &[
            &net,
            Path::new("--json"),
            &json,
            &dir.join("scans/ct05.dcm"),
        ],
    );
    let o: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let img = &o["images"][0];
    assert_eq!(img["label"], img["plaintext_label"], "{o}");
    assert_eq!(o["classes"].as_array().unwrap().len(), 3, "{o}");
}
