//! The diagnosis as a DICOM Basic Text Structured Report (PS3.3 A.35.1), written with dicom-rs:
//! in the source study (its patient and study attributes copied), a series of its own, the
//! source instances as evidence, and in its content the finding per image, the series' summary,
//! the model, the inference mode and the plan's fingerprint. Viewers and PACS show it as a report.

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject, OpenFileOptions};

use super::error::PacsError;

/// What a source instance says about itself and its patient.
#[derive(Clone, Debug)]
pub struct SourceHeader {
    pub sop_class: String,
    pub sop_instance: String,
    pub series: String,
    /// Patient and study attributes copied into the report (absent ones stay absent).
    copied: Vec<(Tag, VR, PrimitiveValue)>,
}

/// Attributes of the patient and the study the report repeats (PS3.3 C.7.1.1, C.7.2.1).
const COPIED: [(Tag, VR); 10] = [
    (tags::PATIENT_NAME, VR::PN),
    (tags::PATIENT_ID, VR::LO),
    (tags::PATIENT_BIRTH_DATE, VR::DA),
    (tags::PATIENT_SEX, VR::CS),
    (tags::STUDY_INSTANCE_UID, VR::UI),
    (tags::STUDY_DATE, VR::DA),
    (tags::STUDY_TIME, VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
    (tags::STUDY_ID, VR::SH),
    (tags::ACCESSION_NUMBER, VR::SH),
];

/// Reads the header of a Part 10 instance (pixel data is not read).
pub fn read_header(bytes: &[u8]) -> Result<SourceHeader, String> {
    let obj: DefaultDicomObject = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(bytes)
        .map_err(|e| format!("cannot be parsed: {e}"))?;
    let text = |tag: Tag| {
        obj.element_opt(tag)
            .ok()
            .flatten()
            .and_then(|e| e.to_str().ok())
            .map(|s| s.trim_matches(|c: char| c == '\0' || c == ' ').to_string())
            .filter(|s| !s.is_empty())
    };
    let sop_class = text(tags::SOP_CLASS_UID).ok_or("no SOP Class UID")?;
    let sop_instance = text(tags::SOP_INSTANCE_UID).ok_or("no SOP Instance UID")?;
    super::query::check_uid(&sop_instance)?;
    let copied = COPIED
        .iter()
        .filter_map(|&(tag, vr)| text(tag).map(|v| (tag, vr, PrimitiveValue::from(v))))
        .collect();
    Ok(SourceHeader {
        sop_class,
        sop_instance,
        series: text(tags::SERIES_INSTANCE_UID).unwrap_or_default(),
        copied,
    })
}

/// One image's result, as the report states it.
#[derive(Clone, Debug)]
pub struct Finding {
    /// Index of the source instance.
    pub instance: usize,
    /// `frame k/n` for a multi-frame instance.
    pub frame: Option<String>,
    pub class: String,
    pub probability: f64,
}

/// Everything a report says.
#[derive(Clone, Debug)]
pub struct ReportSpec<'a> {
    pub sources: &'a [SourceHeader],
    pub findings: &'a [Finding],
    pub model: &'a str,
    /// `released (mode b)` or `collective (mode a)`.
    pub inference: &'a str,
    pub fingerprint: &'a str,
    pub series_uid: &'a str,
    pub instance_uid: &'a str,
    /// Content date and time (DICOM DA and TM).
    pub date: &'a str,
    pub time: &'a str,
}

/// A new UID under the 2.25 arc (PS3.5 B.2: a UUID as one decimal integer).
pub fn new_uid() -> Result<String, PacsError> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| PacsError::Report(format!("no randomness for a UID: {e}")))?;
    Ok(format!("2.25.{}", u128::from_be_bytes(b)))
}

fn put(obj: &mut InMemDicomObject, tag: Tag, vr: VR, v: impl Into<PrimitiveValue>) {
    obj.put(DataElement::new(tag, vr, v.into()));
}

fn code(value: &str, scheme: &str, meaning: &str) -> InMemDicomObject {
    let mut c = InMemDicomObject::new_empty();
    put(&mut c, tags::CODE_VALUE, VR::SH, value);
    put(&mut c, tags::CODING_SCHEME_DESIGNATOR, VR::SH, scheme);
    put(&mut c, tags::CODE_MEANING, VR::LO, meaning);
    c
}

fn seq(obj: &mut InMemDicomObject, tag: Tag, items: Vec<InMemDicomObject>) {
    obj.put(DataElement::new(tag, VR::SQ, DataSetSequence::from(items)));
}

/// A TEXT content item under `name` (a code of DCM, or of HEAL's private scheme 99HEAL).
fn text_item(name: (&str, &str, &str), text: &str) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::RELATIONSHIP_TYPE, VR::CS, "CONTAINS");
    put(&mut item, tags::VALUE_TYPE, VR::CS, "TEXT");
    seq(
        &mut item,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code(name.0, name.1, name.2)],
    );
    // UT holds up to 2^32 − 2 bytes; one line per image stays far below
    put(&mut item, tags::TEXT_VALUE, VR::UT, text);
    item
}

/// The series' summary: the class found in most images, with its count.
pub fn summary(findings: &[Finding]) -> String {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for f in findings {
        match counts.iter_mut().find(|(c, _)| *c == f.class) {
            Some((_, n)) => *n += 1,
            None => counts.push((&f.class, 1)),
        }
    }
    counts.sort_by_key(|c| std::cmp::Reverse(c.1));
    let parts: Vec<String> = counts
        .iter()
        .map(|(c, n)| format!("{c} in {n} of {} images", findings.len()))
        .collect();
    parts.join("; ")
}

/// The report as a Part 10 file (explicit VR little endian).
pub fn sr_bytes(spec: &ReportSpec) -> Result<Vec<u8>, PacsError> {
    let first = spec
        .sources
        .first()
        .ok_or_else(|| PacsError::Report("a report of no instance".into()))?;
    let mut obj = InMemDicomObject::new_empty();
    put(&mut obj, tags::SPECIFIC_CHARACTER_SET, VR::CS, "ISO_IR 192");
    put(
        &mut obj,
        tags::SOP_CLASS_UID,
        VR::UI,
        uids::BASIC_TEXT_SR_STORAGE,
    );
    put(&mut obj, tags::SOP_INSTANCE_UID, VR::UI, spec.instance_uid);
    for (tag, vr, v) in &first.copied {
        obj.put(DataElement::new(*tag, *vr, v.clone()));
    }
    // the study module's type 2 attributes, present even when the source has none
    for (tag, vr) in [
        (tags::PATIENT_NAME, VR::PN),
        (tags::PATIENT_ID, VR::LO),
        (tags::PATIENT_BIRTH_DATE, VR::DA),
        (tags::PATIENT_SEX, VR::CS),
        (tags::STUDY_DATE, VR::DA),
        (tags::STUDY_TIME, VR::TM),
        (tags::REFERRING_PHYSICIAN_NAME, VR::PN),
        (tags::STUDY_ID, VR::SH),
        (tags::ACCESSION_NUMBER, VR::SH),
    ] {
        if obj.element_opt(tag).ok().flatten().is_none() {
            obj.put(DataElement::new(tag, vr, PrimitiveValue::Empty));
        }
    }
    put(&mut obj, tags::MODALITY, VR::CS, "SR");
    put(&mut obj, tags::SERIES_INSTANCE_UID, VR::UI, spec.series_uid);
    put(&mut obj, tags::SERIES_NUMBER, VR::IS, "9901");
    put(
        &mut obj,
        tags::SERIES_DESCRIPTION,
        VR::LO,
        "HEAL encrypted diagnosis",
    );
    seq(
        &mut obj,
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        vec![],
    );
    put(&mut obj, tags::MANUFACTURER, VR::LO, "HEAL");
    put(
        &mut obj,
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        env!("CARGO_PKG_VERSION"),
    );
    put(&mut obj, tags::INSTANCE_NUMBER, VR::IS, "1");
    put(&mut obj, tags::CONTENT_DATE, VR::DA, spec.date);
    put(&mut obj, tags::CONTENT_TIME, VR::TM, spec.time);
    put(&mut obj, tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    put(&mut obj, tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    seq(&mut obj, tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, vec![]);
    obj.put(evidence(spec)?);
    // the document's root: a container with the findings
    put(&mut obj, tags::VALUE_TYPE, VR::CS, "CONTAINER");
    put(&mut obj, tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    seq(
        &mut obj,
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        vec![code("18748-4", "LN", "Diagnostic imaging report")],
    );
    let mut content = vec![
        text_item(("121071", "DCM", "Finding"), &summary(spec.findings)),
        text_item(("111001", "DCM", "Algorithm Name"), spec.model),
        text_item(("111003", "DCM", "Algorithm Version"), spec.fingerprint),
        text_item(
            ("INFERENCE-MODE", "99HEAL", "Inference mode"),
            &format!(
                "{}: the images were encrypted at the hospital and evaluated under encryption; \
                 only the hospital decrypted the result",
                spec.inference
            ),
        ),
    ];
    for f in spec.findings {
        let src = spec.sources.get(f.instance).ok_or_else(|| {
            PacsError::Report(format!(
                "a finding of instance {} of {}",
                f.instance,
                spec.sources.len()
            ))
        })?;
        let frame = f
            .frame
            .as_deref()
            .map(|s| format!(", {s}"))
            .unwrap_or_default();
        content.push(text_item(
            ("121071", "DCM", "Finding"),
            &format!(
                "instance {}{frame}: {} (probability {:.4})",
                src.sop_instance, f.class, f.probability
            ),
        ));
    }
    seq(&mut obj, tags::CONTENT_SEQUENCE, content);
    let file = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .media_storage_sop_class_uid(uids::BASIC_TEXT_SR_STORAGE)
                .media_storage_sop_instance_uid(spec.instance_uid),
        )
        .map_err(|e| PacsError::Report(e.to_string()))?;
    let mut out = Vec::new();
    file.write_all(&mut out)
        .map_err(|e| PacsError::Report(e.to_string()))?;
    Ok(out)
}

/// Current Requested Procedure Evidence Sequence: the study, its series, every source instance.
fn evidence(spec: &ReportSpec) -> Result<dicom_object::mem::InMemElement, PacsError> {
    let study = spec.sources[0]
        .copied
        .iter()
        .find(|(t, _, _)| *t == tags::STUDY_INSTANCE_UID)
        .map(|(_, _, v)| v.to_str().to_string())
        .ok_or_else(|| PacsError::Report("the source has no Study Instance UID".into()))?;
    let sops = spec
        .sources
        .iter()
        .map(|s| {
            let mut r = InMemDicomObject::new_empty();
            put(
                &mut r,
                tags::REFERENCED_SOP_CLASS_UID,
                VR::UI,
                s.sop_class.as_str(),
            );
            put(
                &mut r,
                tags::REFERENCED_SOP_INSTANCE_UID,
                VR::UI,
                s.sop_instance.as_str(),
            );
            r
        })
        .collect();
    let mut series = InMemDicomObject::new_empty();
    put(
        &mut series,
        tags::SERIES_INSTANCE_UID,
        VR::UI,
        spec.sources[0].series.as_str(),
    );
    seq(&mut series, tags::REFERENCED_SOP_SEQUENCE, sops);
    let mut item = InMemDicomObject::new_empty();
    put(&mut item, tags::STUDY_INSTANCE_UID, VR::UI, study);
    seq(&mut item, tags::REFERENCED_SERIES_SEQUENCE, vec![series]);
    Ok(DataElement::new(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        VR::SQ,
        DataSetSequence::from(vec![item]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(k: u32) -> Vec<u8> {
        datasets::dicom_writer::dicom_bytes(
            &datasets::dicom_writer::DicomSpec {
                rows: 4,
                cols: 4,
                patient: Some("PAT-3"),
                uids: Some(["1.2.3", "1.2.3.4", &format!("1.2.3.4.{k}")]),
                ..Default::default()
            },
            &[0; 16],
        )
        .unwrap()
    }

    #[test]
    fn the_report_is_an_sr_in_the_source_study_naming_every_instance_and_finding() {
        let sources: Vec<SourceHeader> = (0..2).map(|k| read_header(&source(k)).unwrap()).collect();
        assert_eq!(sources[1].sop_instance, "1.2.3.4.1");
        let findings = [
            Finding {
                instance: 0,
                frame: None,
                class: "tumor".into(),
                probability: 0.9,
            },
            Finding {
                instance: 1,
                frame: Some("frame 1/2".into()),
                class: "normal".into(),
                probability: 0.6,
            },
        ];
        let bytes = sr_bytes(&ReportSpec {
            sources: &sources,
            findings: &findings,
            model: "ct256",
            inference: "released (mode b)",
            fingerprint: "f00d",
            series_uid: "2.25.1",
            instance_uid: "2.25.2",
            date: "20261126",
            time: "120000",
        })
        .unwrap();
        let obj: DefaultDicomObject = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .from_reader(bytes.as_slice())
            .unwrap();
        let text = |o: &InMemDicomObject, t: Tag| {
            o.element(t)
                .unwrap()
                .to_str()
                .unwrap()
                .trim_end_matches(['\0', ' '])
                .to_string()
        };
        assert_eq!(text(&obj, tags::SOP_CLASS_UID), uids::BASIC_TEXT_SR_STORAGE);
        assert_eq!(text(&obj, tags::STUDY_INSTANCE_UID), "1.2.3");
        assert_eq!(text(&obj, tags::PATIENT_ID), "PAT-3");
        assert_ne!(text(&obj, tags::SERIES_INSTANCE_UID), "1.2.3.4");
        let items = obj
            .element(tags::CONTENT_SEQUENCE)
            .unwrap()
            .items()
            .unwrap();
        let texts: Vec<String> = items.iter().map(|i| text(i, tags::TEXT_VALUE)).collect();
        assert_eq!(texts[0], "tumor in 1 of 2 images; normal in 1 of 2 images");
        assert!(texts.contains(&"f00d".to_string()));
        assert!(
            texts.contains(
                &"instance 1.2.3.4.1, frame 1/2: normal (probability 0.6000)".to_string()
            )
        );
        let evidence = &obj
            .element(tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        let series = &evidence
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            series
                .element(tags::REFERENCED_SOP_SEQUENCE)
                .unwrap()
                .items()
                .unwrap()
                .len(),
            2
        );
        // a finding of an instance the series does not have is an error, not a report
        let stray = [Finding {
            instance: 5,
            frame: None,
            class: "x".into(),
            probability: 1.0,
        }];
        let spec = ReportSpec {
            sources: &sources,
            findings: &stray,
            model: "m",
            inference: "i",
            fingerprint: "f",
            series_uid: "2.25.1",
            instance_uid: "2.25.2",
            date: "20261126",
            time: "1",
        };
        assert!(sr_bytes(&spec).is_err());
        assert!(new_uid().unwrap().len() <= 64);
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_header_with_a_uid_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let mut file = vec![0u8; 128];
            file.extend_from_slice(b"DICM");
            file.extend_from_slice(&body);
            for b in [&body, &file] {
                if let Ok(h) = read_header(b) {
                    proptest::prop_assert!(super::super::query::check_uid(&h.sop_instance).is_ok());
                }
            }
        }
    }
}
