//! QIDO-RS: the match keys HEAL sends and what it reads from the DICOM JSON answers (PS3.18
//! F.2). Every UID read is checked before it is put into a URL or a record.

use dicom_core::Tag;
use serde_json::Value;

use super::config::{PacsConfig, attribute};
use super::error::PacsError;

/// A series QIDO-RS found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesRef {
    pub study: String,
    pub series: String,
    pub modality: String,
    /// Number of Series Related Instances, when the PACS says.
    pub instances: Option<u32>,
}

/// A tag as DICOM JSON names it (`0020000D`).
pub fn json_key(tag: Tag) -> String {
    format!("{:04X}{:04X}", tag.0, tag.1)
}

/// The match keys of one series query for `modality`: paged by `offset`/`limit`, with the
/// study and series UIDs, the modality and the instance count asked for.
pub fn series_params(
    cfg: &PacsConfig,
    modality: &str,
    offset: u32,
    limit: u32,
) -> Vec<(String, String)> {
    let mut p = vec![("Modality".to_string(), modality.to_string())];
    if let Some(b) = &cfg.body_part {
        p.push(("BodyPartExamined".into(), b.clone()));
    }
    if let Some(d) = &cfg.study_date {
        p.push(("StudyDate".into(), d.clone()));
    }
    for (k, v) in &cfg.match_keys {
        if let Some(tag) = attribute(k) {
            p.push((json_key(tag), v.clone()));
        }
    }
    for field in [
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "NumberOfSeriesRelatedInstances",
    ] {
        p.push(("includefield".into(), field.into()));
    }
    p.push(("offset".into(), offset.to_string()));
    p.push(("limit".into(), limit.to_string()));
    p
}

/// A UID as PS3.5 9.1 allows it: 1 to 64 characters, digits and dots, no empty component.
pub fn check_uid(uid: &str) -> Result<(), String> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid
            .split('.')
            .all(|c| !c.is_empty() && c.bytes().all(|b| b.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a DICOM UID (digits and dots, at most 64)",
            uid.chars().take(80).collect::<String>()
        ))
    }
}

/// The first value of attribute `tag` of a DICOM JSON object, as a string.
pub fn first_string(obj: &Value, tag: Tag) -> Option<String> {
    let v = obj.get(json_key(tag))?.get("Value")?.get(0)?;
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn objects<'a>(json: &'a Value, what: &'static str) -> Result<&'a Vec<Value>, PacsError> {
    json.as_array().ok_or_else(|| PacsError::BadAnswer {
        what,
        detail: "not a JSON array of DICOM objects".into(),
    })
}

/// The series of a QIDO-RS answer (an empty body is no match, as some PACS answer 204).
pub fn parse_series(body: &[u8], modality: &str) -> Result<Vec<SeriesRef>, PacsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let what = "a series query";
    let json: Value = serde_json::from_slice(body).map_err(|e| PacsError::BadAnswer {
        what,
        detail: e.to_string(),
    })?;
    let mut out = Vec::new();
    for obj in objects(&json, what)? {
        let get = |tag: Tag, name: &str| {
            first_string(obj, tag).ok_or_else(|| PacsError::BadAnswer {
                what,
                detail: format!("a series without {name}"),
            })
        };
        let study = get(
            dicom_dictionary_std::tags::STUDY_INSTANCE_UID,
            "StudyInstanceUID",
        )?;
        let series = get(
            dicom_dictionary_std::tags::SERIES_INSTANCE_UID,
            "SeriesInstanceUID",
        )?;
        for uid in [&study, &series] {
            check_uid(uid).map_err(|detail| PacsError::BadAnswer { what, detail })?;
        }
        let instances = first_string(
            obj,
            dicom_dictionary_std::tags::NUMBER_OF_SERIES_RELATED_INSTANCES,
        )
        .and_then(|n| n.trim().parse().ok());
        out.push(SeriesRef {
            study,
            series,
            modality: first_string(obj, dicom_dictionary_std::tags::MODALITY)
                .unwrap_or_else(|| modality.to_string()),
            instances,
        });
    }
    Ok(out)
}

/// The SOP Instance UIDs of an instance-level QIDO-RS answer.
pub fn parse_instances(body: &[u8]) -> Result<Vec<String>, PacsError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let what = "an instance query";
    let json: Value = serde_json::from_slice(body).map_err(|e| PacsError::BadAnswer {
        what,
        detail: e.to_string(),
    })?;
    objects(&json, what)?
        .iter()
        .map(|obj| {
            let uid = first_string(obj, dicom_dictionary_std::tags::SOP_INSTANCE_UID).ok_or_else(
                || PacsError::BadAnswer {
                    what,
                    detail: "an instance without SOPInstanceUID".into(),
                },
            )?;
            check_uid(&uid).map_err(|detail| PacsError::BadAnswer { what, detail })?;
            Ok(uid)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn match_keys_are_keywords_or_tags() {
        assert_eq!(attribute("InstitutionName"), Some(Tag(0x0008, 0x0080)));
        assert_eq!(attribute("00081030"), Some(Tag(0x0008, 0x1030)));
        assert_eq!(attribute("NoSuchKeyword"), None);
        let mut cfg = PacsConfig::for_url("http://127.0.0.1:1/dicom-web");
        cfg.body_part = Some("ABDOMEN".into());
        cfg.match_keys
            .insert("InstitutionName".into(), "St Mary".into());
        let p = series_params(&cfg, "CT", 100, 50);
        for want in [
            ("Modality", "CT"),
            ("BodyPartExamined", "ABDOMEN"),
            ("00080080", "St Mary"),
            ("offset", "100"),
            ("limit", "50"),
        ] {
            assert!(
                p.iter().any(|(k, v)| (k.as_str(), v.as_str()) == want),
                "{want:?} in {p:?}"
            );
        }
    }

    #[test]
    fn series_answers_are_read_and_checked() {
        let body = br#"[{"0020000D":{"vr":"UI","Value":["1.2.3"]},"0020000E":{"vr":"UI","Value":["1.2.3.4"]},
            "00080060":{"vr":"CS","Value":["CT"]},"00201209":{"vr":"IS","Value":[12]}}]"#;
        let s = parse_series(body, "CT").unwrap();
        assert_eq!(
            s,
            [SeriesRef {
                study: "1.2.3".into(),
                series: "1.2.3.4".into(),
                modality: "CT".into(),
                instances: Some(12)
            }]
        );
        assert!(parse_series(b"", "CT").unwrap().is_empty());
        // a UID that would walk out of the URL path is refused, never used
        let evil = br#"[{"0020000D":{"vr":"UI","Value":["../../studies"]},"0020000E":{"vr":"UI","Value":["1"]}}]"#;
        assert!(
            parse_series(evil, "CT")
                .unwrap_err()
                .to_string()
                .contains("not a DICOM UID")
        );
        let missing = br#"[{"0020000D":{"vr":"UI","Value":["1.2"]}}]"#;
        assert!(
            parse_series(missing, "CT")
                .unwrap_err()
                .to_string()
                .contains("without SeriesInstanceUID")
        );
        assert!(parse_series(b"{}", "CT").is_err());
        assert!(parse_series(b"[", "CT").is_err());
        assert_eq!(
            parse_instances(br#"[{"00080018":{"vr":"UI","Value":["1.2.9"]}}]"#).unwrap(),
            ["1.2.9"]
        );
    }

    proptest::proptest! {
        #[test]
        fn any_answer_gives_checked_uids_or_an_error(body in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Ok(series) = parse_series(&body, "CT") {
                for s in series {
                    proptest::prop_assert!(check_uid(&s.study).is_ok() && check_uid(&s.series).is_ok());
                }
            }
            let _ = parse_instances(&body);
        }

        #[test]
        fn a_series_is_taken_exactly_when_both_its_uids_are_uids(
            study in "[0-9.a/]{0,70}",
            series in "[0-9.]{0,70}",
        ) {
            let body = format!(
                r#"[{{"0020000D":{{"vr":"UI","Value":["{study}"]}},"0020000E":{{"vr":"UI","Value":["{series}"]}}}}]"#
            );
            let valid = check_uid(&study).is_ok() && check_uid(&series).is_ok();
            proptest::prop_assert_eq!(parse_series(body.as_bytes(), "CT").is_ok(), valid);
        }
    }

    #[test]
    fn uids_are_digits_and_dots() {
        assert!(check_uid("1.2.840.10008.1.2").is_ok());
        for bad in ["", "1..2", "1.2.", "1.2a", &"1".repeat(65)] {
            assert!(check_uid(bad).is_err(), "{bad}");
        }
    }
}
