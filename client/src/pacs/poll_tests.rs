//! The poller against a PACS and a diagnosis made here: what a pass does with each series and
//! each failure, and what a restart finds.

use std::collections::HashMap;

use super::*;
use crate::infer::ImageResult;
use crate::infer::outcome::{Sizes, Timings};

const STUDY: &str = "1.2.826.7";

fn instance(series: &str, k: u32) -> Vec<u8> {
    let uids = [STUDY, series, &format!("{series}.{k}")];
    datasets::dicom_writer::dicom_bytes(
        &datasets::dicom_writer::DicomSpec {
            rows: 8,
            cols: 8,
            uids: Some([uids[0], uids[1], uids[2]]),
            ..Default::default()
        },
        &[100; 64],
    )
    .unwrap()
}

#[derive(Default)]
struct FakePacs {
    series: Vec<SeriesRef>,
    instances: HashMap<String, Vec<Vec<u8>>>,
    stored: Vec<Vec<u8>>,
    /// the next store arrives, but its answer is lost (a reset connection)
    lose_answer: bool,
    down: bool,
}

impl FakePacs {
    fn add(&mut self, series: &str, n: u32) {
        self.series.push(SeriesRef {
            study: STUDY.into(),
            series: series.into(),
            modality: "CT".into(),
            instances: Some(n),
        });
        let inst = (0..n).map(|k| instance(series, k)).collect();
        self.instances.insert(series.into(), inst);
    }

    fn unreachable(&self) -> PacsError {
        PacsError::Unreachable {
            what: "a test",
            url: "http://pacs".into(),
            detail: "connection refused".into(),
        }
    }

    fn stored_sops(&self) -> Vec<String> {
        self.stored
            .iter()
            .map(|b| report::read_header(b).unwrap().sop_instance)
            .collect()
    }
}

impl Pacs for &mut FakePacs {
    fn find_series(&mut self) -> Result<Vec<SeriesRef>, PacsError> {
        if self.down {
            return Err(self.unreachable());
        }
        Ok(self.series.clone())
    }
    fn retrieve(&mut self, s: &SeriesRef) -> Result<Vec<Vec<u8>>, PacsError> {
        Ok(self.instances[&s.series].clone())
    }
    fn store(&mut self, dicom: &[u8]) -> Result<(), PacsError> {
        self.stored.push(dicom.to_vec());
        if std::mem::take(&mut self.lose_answer) {
            return Err(self.unreachable());
        }
        Ok(())
    }
    fn has_instance(&mut self, _study: &str, sop: &str) -> Result<bool, PacsError> {
        Ok(self.stored_sops().iter().any(|s| s == sop))
    }
}

/// Labels each image by its file's size; counts the images it saw; fails on demand.
#[derive(Default)]
struct FakeDiagnosis {
    images: usize,
    fail: Option<fn() -> InferenceError>,
}

impl Diagnose for &mut FakeDiagnosis {
    fn diagnose(&mut self, files: &[PathBuf]) -> Result<InferOutcome, InferenceError> {
        if let Some(f) = self.fail {
            return Err(f());
        }
        self.images += files.len();
        let images = files
            .iter()
            .map(|f| ImageResult {
                image: f.display().to_string(),
                label: 1,
                class: "malignant".into(),
                probabilities: vec![0.25, 0.75],
                logits: vec![0.0, 1.1],
                true_label: None,
                plaintext_label: None,
            })
            .collect();
        Ok(InferOutcome {
            mode: "local".into(),
            inference: protocol::site::InferenceMode::Released,
            model: "test-model".into(),
            ring_degree: 8192,
            depth: 5,
            galois_keys: 3,
            fingerprint: "ab".repeat(32),
            classes: vec!["benign".into(), "malignant".into()],
            images,
            timings: Timings::default(),
            bytes: Sizes::default(),
        })
    }
}

fn poller<'a>(
    pacs: &'a mut FakePacs,
    diagnosis: &'a mut FakeDiagnosis,
    dir: &Path,
) -> Poller<&'a mut FakePacs, &'a mut FakeDiagnosis> {
    Poller {
        pacs,
        diagnose: diagnosis,
        record: Record::open(&dir.join("pacs.redb")).unwrap(),
        work: dir.join("work"),
        max_instances: 10,
    }
}

#[test]
fn each_series_is_diagnosed_once_and_its_report_names_what_made_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pacs, mut dx) = (FakePacs::default(), FakeDiagnosis::default());
    pacs.add("1.2.826.7.1", 3);
    pacs.add("1.2.826.7.2", 11);
    let first = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(first.found, 2);
    assert_eq!(first.diagnosed.len(), 1, "{first:?}");
    assert_eq!(first.diagnosed[0].1, "malignant in 3 of 3 images");
    assert_eq!((first.times.len(), first.times[0].images), (1, 3));
    assert!(
        first.refused[0]
            .1
            .contains("11 instances, more than [pacs] max_instances = 10")
    );
    // the fetched instances do not stay on the node
    assert_eq!(
        std::fs::read_dir(dir.path().join("work")).unwrap().count(),
        0
    );
    let second = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(
        (second.settled, second.diagnosed.len()),
        (2, 0),
        "{second:?}"
    );
    assert_eq!((pacs.stored.len(), dx.images), (1, 3));
    let text = String::from_utf8_lossy(&pacs.stored[0]).into_owned();
    for said in [
        "test-model",
        &"ab".repeat(32),
        "released (mode b)",
        "1.2.826.7.1.2",
    ] {
        assert!(text.contains(said), "the report does not say {said}");
    }
}

#[test]
fn a_report_whose_answer_was_lost_is_found_in_the_pacs_not_made_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pacs, mut dx) = (FakePacs::default(), FakeDiagnosis::default());
    pacs.add("1.2.826.7.1", 2);
    pacs.lose_answer = true;
    let first = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(first.deferred.len(), 1, "{first:?}");
    // the next pass (after a restart: a new poller on the same record) asks the PACS
    let second = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(second.diagnosed.len(), 1, "{second:?}");
    assert_eq!(
        (pacs.stored.len(), dx.images),
        (1, 2),
        "diagnosed or stored twice"
    );
}

#[test]
fn passing_failures_wait_broken_series_are_refused_and_a_refused_mode_stops() {
    let dir = tempfile::tempdir().unwrap();
    let (mut pacs, mut dx) = (FakePacs::default(), FakeDiagnosis::default());
    pacs.add("1.2.826.7.1", 1);
    pacs.down = true;
    assert!(
        poller(&mut pacs, &mut dx, dir.path())
            .pass()
            .unwrap_err()
            .is_passing()
    );
    pacs.down = false;
    dx.fail =
        Some(|| InferenceError::Protocol(protocol::ProtocolError::Timeout(Duration::from_secs(1))));
    let p = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(p.deferred.len(), 1, "{p:?}");
    dx.fail = Some(|| InferenceError::ModeRefused("the server answers in collective".into()));
    let err = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap_err();
    assert!(
        err.is_fatal() && err.to_string().contains("collective"),
        "{err}"
    );
    dx.fail = None;
    // a broken instance: the series is refused with the instance named, once
    pacs.instances.get_mut("1.2.826.7.1").unwrap()[0].truncate(200);
    let p = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert!(p.refused[0].1.contains("instance 1 of 1"), "{p:?}");
    pacs.instances.get_mut("1.2.826.7.1").unwrap()[0] = instance("1.2.826.7.1", 0);
    let p = poller(&mut pacs, &mut dx, dir.path()).pass().unwrap();
    assert_eq!(p.settled, 1, "a refused series is not fetched again");
    assert!(pacs.stored.is_empty());
}
