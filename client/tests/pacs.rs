//! `client pacs` against a real Orthanc (Debian's packages, started here on 127.0.0.1): studies
//! written by the test are uploaded through Orthanc's own API; the node finds the CT series by
//! QIDO-RS, fetches them by WADO-RS, diagnoses them under encryption (mode (b) on this node) and
//! stores a Structured Report by STOW-RS; the reports are read back through DICOMweb and checked
//! against `client infer --local` on the same files. Then: a second pass adds nothing, Orthanc
//! restarted under a running node, a broken series, refused credentials, TLS (nginx in front of
//! Orthanc, as sites expose it) checked against the site's CA. Every wait is bounded; Orthanc and the node are killed on every exit path.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use training::baseline::{BaselineConfig, run_baseline};

mod common;
#[path = "support/orthanc.rs"]
mod orthanc;
use orthanc::Orthanc;

const STUDY: &str = "1.2.826.0.1.3680043.8.498.71";

fn uid(s: &str) -> String {
    format!("{STUDY}.{s}")
}

/// A 64×64 CT slice of `series`: a bright disc whose size depends on `k`.
fn slice(series: &str, k: u32, modality: &str) -> Vec<u8> {
    let (se, sop) = (uid(series), uid(&format!("{series}.{k}")));
    let mut hu = Vec::with_capacity(64 * 64);
    for y in 0..64i32 {
        for x in 0..64i32 {
            let r2 = (x - 32).pow(2) + (y - 30).pow(2);
            hu.push(if r2 < (8 + 4 * k as i32).pow(2) {
                1124
            } else {
                900
            });
        }
    }
    datasets::dicom_writer::dicom_bytes(
        &datasets::dicom_writer::DicomSpec {
            rows: 64,
            cols: 64,
            rescale: Some((1.0, -1024.0)),
            patient: Some("PAT-7"),
            modality,
            uids: Some([STUDY, &se, &sop]),
            ..Default::default()
        },
        &hu,
    )
    .unwrap()
}

/// A small network trained once for every test of this file (BreastMNIST, 2 epochs).
fn network() -> &'static Path {
    static NET: OnceLock<PathBuf> = OnceLock::new();
    NET.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let cfg_path = dir.join("cfg.toml");
        std::fs::write(
            &cfg_path,
            format!(
                "[dataset]\nkind = \"medmnist\"\nname = \"breastmnist\"\noffline = true\n\
                 data_dir = {:?}\n[train]\nepochs = 2\nbatch_size = 32\n[baseline]\nmax_train = 200\n",
                common::data_dir().display().to_string()
            ),
        )
        .unwrap();
        let cfg = BaselineConfig::load(&cfg_path).unwrap();
        run_baseline(&cfg, &dir, &dir.join("model"), false).unwrap();
        dir.join("model/network.json")
    })
}

/// A site TOML with `[pacs]` pointing at `orthanc`, the password read from `password`.
fn site(dir: &Path, name: &str, orthanc: &Orthanc, password: &str, ca: bool) -> PathBuf {
    std::fs::write(
        dir.join(format!("{name}.password")),
        format!("{password}\n"),
    )
    .unwrap();
    let mut pacs = format!(
        "[pacs]\nurl = \"{}\"\nauth = \"basic\"\nusername = \"{}\"\npassword_file = \"{name}.password\"\n\
         modalities = [\"CT\"]\npoll_s = 1\nretries = 2\ntimeout_s = 20\n",
        orthanc.dicom_web(),
        orthanc::USER
    );
    if ca {
        std::fs::write(dir.join("pacs-ca.pem"), orthanc.ca_pem.as_ref().unwrap()).unwrap();
        pacs.push_str("ca_file = \"pacs-ca.pem\"\n");
    }
    let text = format!(
        "[site]\nindex = 1\nfederation = \"{}\"\nname = \"test\"\ncoordinator = \"127.0.0.1:9\"\n\
         hospitals = 3\nthreshold = 2\ninference = \"released\"\n\n[he]\n\n[dataset]\nkind = \"medmnist\"\n\
         name = \"breastmnist\"\n\n{pacs}",
        "ab".repeat(16)
    );
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn client_pacs(site: &Path, out: &Path, once: bool) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_client"));
    c.args(["--quiet", "pacs", "--site"])
        .arg(site)
        .arg("--out")
        .arg(out)
        .arg("--network")
        .arg(network());
    if once {
        c.arg("--once");
    }
    c
}

/// One `client pacs --once`: its pass summary, or its stderr when it failed.
fn pass(site: &Path, out: &Path) -> Result<serde_json::Value, String> {
    let o = client_pacs(site, out, true).output().unwrap();
    let stdout = String::from_utf8_lossy(&o.stdout);
    let stderr = String::from_utf8_lossy(&o.stderr).into_owned();
    if !o.status.success() {
        return Err(stderr);
    }
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("HEAL-PACS-PASS "))
        .unwrap_or_else(|| panic!("no pass line:\n{stdout}\n{stderr}"));
    Ok(serde_json::from_str(line).unwrap())
}

fn series_of(list: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p[0].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// WADO-RS through the plugin: a series' instances.
fn wado_series(orthanc: &Orthanc, study: &str, series: &str) -> Vec<Vec<u8>> {
    let (status, body, ct) = orthanc
        .get_with(
            &format!("/dicom-web/studies/{study}/series/{series}"),
            "multipart/related; type=\"application/dicom\"",
        )
        .unwrap();
    assert_eq!(status, 200);
    client::pacs::dicomweb::parts(&ct, body, 10_000).unwrap()
}

/// The reports in the study, read back through DICOMweb.
fn reports(orthanc: &Orthanc) -> Vec<DefaultDicomObject> {
    let series = orthanc.qido(&format!("/dicom-web/studies/{STUDY}/series?Modality=SR"));
    let mut out = Vec::new();
    for s in series {
        let se = s["0020000E"]["Value"][0].as_str().unwrap().to_string();
        for bytes in wado_series(orthanc, STUDY, &se) {
            out.push(
                OpenFileOptions::new()
                    .read_preamble(ReadPreamble::Always)
                    .from_reader(bytes.as_slice())
                    .unwrap(),
            );
        }
    }
    out
}

fn text(obj: &dicom_object::InMemDicomObject, tag: dicom_core::Tag) -> String {
    obj.element(tag)
        .unwrap()
        .to_str()
        .unwrap()
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// The report's TEXT items, and the series its evidence names.
fn content(report: &DefaultDicomObject) -> (Vec<String>, String) {
    let items = report
        .element(tags::CONTENT_SEQUENCE)
        .unwrap()
        .items()
        .unwrap();
    let texts = items.iter().map(|i| text(i, tags::TEXT_VALUE)).collect();
    let evidence = &report
        .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    let series = &evidence
        .element(tags::REFERENCED_SERIES_SEQUENCE)
        .unwrap()
        .items()
        .unwrap()[0];
    (texts, text(series, tags::SERIES_INSTANCE_UID))
}

/// `client infer --local` on the same files: each image's class and whether it equals the
/// plaintext network's, and the plan's fingerprint.
fn infer_local(dir: &Path, files: &[Vec<u8>]) -> (Vec<String>, String) {
    let mut paths = Vec::new();
    for (k, f) in files.iter().enumerate() {
        let p = dir.join(format!("local-{k}.dcm"));
        std::fs::write(&p, f).unwrap();
        paths.push(p);
    }
    let json = dir.join("local.json");
    let o = Command::new(env!("CARGO_BIN_EXE_client"))
        .args(["--quiet", "infer", "--local", "--network"])
        .arg(network())
        .arg("--json")
        .arg(&json)
        .args(&paths)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let images = v["images"].as_array().unwrap();
    for im in images {
        assert_eq!(im["label"], im["plaintext_label"], "{im}");
    }
    let classes = images
        .iter()
        .map(|i| i["class"].as_str().unwrap().to_string())
        .collect();
    (classes, v["fingerprint"].as_str().unwrap().to_string())
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < limit,
            "{what}: not within {} s",
            limit.as_secs()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn last_pass(out: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(out.join("pacs-last-pass.json")).ok()?).ok()
}

#[test]
fn each_ct_series_gets_one_encrypted_report_in_its_study_through_restarts() {
    let Some(bin) = orthanc::binary() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let mut orthanc = Orthanc::start(&bin, &dir.join("orthanc"), None);
    let a: Vec<Vec<u8>> = (0..3).map(|k| slice("1", k, "CT")).collect();
    for f in &a {
        orthanc.upload(f);
    }
    // series 2: its second instance's pixel data is cut short (the header says 64×64)
    orthanc.upload(&slice("2", 0, "CT"));
    let broken = datasets::dicom_writer::dicom_bytes(
        &datasets::dicom_writer::DicomSpec {
            rows: 64,
            cols: 64,
            patient: Some("PAT-7"),
            uids: Some([STUDY, &uid("2"), &uid("2.1")]),
            ..Default::default()
        },
        &[7; 10],
    )
    .unwrap();
    orthanc.upload(&broken);
    // an MR series: not what the site asks for
    orthanc.upload(&slice("3", 0, "MR"));

    let site = site(dir, "site", &orthanc, orthanc::PASSWORD, false);
    let out = dir.join("node");
    network();
    let first = pass(&site, &out).unwrap();
    assert_eq!(first["found"], 2, "{first}");
    assert_eq!(series_of(&first["diagnosed"]), [uid("1")], "{first}");
    assert_eq!(series_of(&first["refused"]), [uid("2")], "{first}");
    let why = first["refused"][0][1].as_str().unwrap();
    assert!(
        why.contains(&format!(
            "instance 2 of 2 ({}): DICOM: pixel data holds 20 bytes",
            uid("2.1")
        )),
        "{why}"
    );

    // the report, read back through DICOMweb, as the PACS's viewers read it
    let r = reports(&orthanc);
    assert_eq!(r.len(), 1);
    let report = &r[0];
    assert_eq!(
        text(report, tags::SOP_CLASS_UID),
        uids::BASIC_TEXT_SR_STORAGE
    );
    assert_eq!(text(report, tags::STUDY_INSTANCE_UID), STUDY);
    assert_eq!(text(report, tags::PATIENT_ID), "PAT-7");
    assert_eq!(text(report, tags::MODALITY), "SR");
    let (texts, evidence) = content(report);
    assert_eq!(evidence, uid("1"));
    let (classes, fingerprint) = infer_local(dir, &a);
    assert!(texts.contains(&fingerprint), "{texts:?}");
    assert!(
        texts.iter().any(|t| t.contains("released (mode b)")),
        "{texts:?}"
    );
    for (k, class) in classes.iter().enumerate() {
        let line = format!("instance {}: {class} (probability", uid(&format!("1.{k}")));
        assert!(
            texts.iter().any(|t| t.starts_with(&line)),
            "{line} in {texts:?}"
        );
    }

    // a second pass: nothing is diagnosed twice, the refused series is not fetched again
    let second = pass(&site, &out).unwrap();
    assert_eq!(
        (second["found"].as_u64(), second["settled"].as_u64()),
        (Some(2), Some(2)),
        "{second}"
    );
    assert_eq!(reports(&orthanc).len(), 1);

    // Orthanc restarted under a running node: the pass that found it down waits, nothing is
    // lost, and the series that arrived after the restart is diagnosed
    let node_log = dir.join("node.log");
    let _node = Killed(
        client_pacs(&site, &out, false)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&node_log).unwrap())
            .spawn()
            .unwrap(),
    );
    orthanc.stop();
    let read_log = || std::fs::read_to_string(&node_log).unwrap_or_default();
    wait_for(
        "the node notices the PACS is down",
        Duration::from_secs(60),
        || read_log().contains("this pass stopped"),
    );
    orthanc.restart(&bin);
    let d: Vec<Vec<u8>> = (0..2).map(|k| slice("4", k, "CT")).collect();
    for f in &d {
        orthanc.upload(f);
    }
    wait_for(
        "the new series is diagnosed",
        Duration::from_secs(120),
        || last_pass(&out).is_some_and(|p| series_of(&p["diagnosed"]) == [uid("4")]),
    );
    let r = reports(&orthanc);
    let mut evidence: Vec<String> = r.iter().map(|r| content(r).1).collect();
    evidence.sort();
    assert_eq!(evidence, [uid("1"), uid("4")], "one report per series");
    assert!(
        read_log().contains("could not be reached"),
        "{}",
        read_log()
    );

    // credentials the PACS refuses: the node stops and says so; the record is untouched
    drop(_node);
    let wrong = site_with_password(dir, &orthanc);
    let err = pass(&wrong, &out).unwrap_err();
    assert!(
        err.contains("refused HEAL's credentials (HTTP 401)"),
        "{err}"
    );
    let record = client::pacs::Record::open(&out.join("pacs.redb")).unwrap();
    let counts = record.counts().unwrap();
    assert_eq!(
        (counts.diagnosed, counts.refused, counts.storing),
        (2, 1, 0)
    );
}

fn site_with_password(dir: &Path, orthanc: &Orthanc) -> PathBuf {
    site(dir, "wrong", orthanc, "not-the-password", false)
}

#[test]
fn a_pacs_over_tls_is_trusted_only_through_the_sites_ca() {
    let (Some(bin), Some(nginx)) = (orthanc::binary(), orthanc::nginx()) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let orthanc = Orthanc::start(&bin, &dir.join("orthanc"), Some(&nginx));
    orthanc.upload(&slice("9", 0, "CT"));
    // the public roots do not know the hospital's CA: refused, nothing fetched
    let untrusted = site(dir, "untrusted", &orthanc, orthanc::PASSWORD, false);
    let err = pass(&untrusted, &dir.join("node-untrusted")).unwrap_err();
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    let trusted = site(dir, "trusted", &orthanc, orthanc::PASSWORD, true);
    let p = pass(&trusted, &dir.join("node")).unwrap();
    assert_eq!(series_of(&p["diagnosed"]), [uid("9")], "{p}");
    assert_eq!(reports(&orthanc).len(), 1);
}
