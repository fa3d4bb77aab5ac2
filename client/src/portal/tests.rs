//! Unit tests: password hashes, the users file, sessions (expiry, CSRF), upload validation,
//! history validation, the training page's reader.

use std::time::{Duration, Instant};

use datasets::ImageShape;

use super::history::{Diagnosis, StoredTimings, UserFiles};
use super::session::{Sessions, constant_time_eq, session_id_from_cookies, set_cookie};
use super::upload::{ImageKind, UploadError, clean_file_name, validate};
use super::users::{Users, hash_password, validate_name, verify_password};

#[test]
fn hashes_verify_and_wrong_passwords_fail() {
    let h = hash_password("correct horse battery").unwrap();
    assert!(h.starts_with("$argon2id$v=19$"), "{h}");
    assert!(verify_password(&h, "correct horse battery"));
    assert!(!verify_password(&h, "correct horse batterz"));
    assert!(!verify_password(&h, ""));
    assert!(!verify_password("not a hash", "correct horse battery"));
    // same password, new salt
    assert_ne!(h, hash_password("correct horse battery").unwrap());
    assert!(hash_password("short").is_err());
}

#[test]
fn users_file_round_trip_and_validation() {
    let dir = tempfile::tempdir().unwrap();
    Users::add(dir.path(), "dr.house", "a long password", false).unwrap();
    assert!(Users::add(dir.path(), "dr.house", "another password", false).is_err());
    Users::add(dir.path(), "dr.house", "another password", true).unwrap();
    Users::add(dir.path(), "nurse-1", "yet another one", false).unwrap();
    let u = Users::load(dir.path()).unwrap();
    assert_eq!(u.len(), 2);
    assert!(u.verify("dr.house", "another password"));
    assert!(!u.verify("dr.house", "a long password"));
    assert!(!u.verify("nobody", "another password"));
    for bad in [
        "",
        ".hidden",
        "a/b",
        "../x",
        "Upper",
        "a b",
        &"x".repeat(65),
    ] {
        assert!(validate_name(bad).is_err(), "{bad:?}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("users.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "users.json readable by others");
    }
    // a tampered file is refused, not half-read
    std::fs::write(
        dir.path().join("users.json"),
        r#"{"format":"heal-portal-users/1","users":[{"name":"x","hash":"plain"}]}"#,
    )
    .unwrap();
    assert!(Users::load(dir.path()).is_err());
    std::fs::write(
        dir.path().join("users.json"),
        r#"{"format":"heal-portal-users/1","users":[],"admin":true}"#,
    )
    .unwrap();
    assert!(Users::load(dir.path()).is_err());
}

#[test]
fn sessions_expire_when_idle_and_at_their_lifetime() {
    let t0 = Instant::now();
    let mut s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
    let (id, sess) = s.create(Some("a".into()), t0).unwrap();
    assert_eq!(id.len(), 64);
    assert_eq!(sess.csrf.len(), 64);
    // touched every 50 s it stays alive until the lifetime ends
    let mut t = t0;
    for _ in 0..5 {
        t += Duration::from_secs(50);
        assert!(s.get(&id, t).is_some());
    }
    assert!(s.get(&id, t0 + Duration::from_secs(301)).is_none());
    // idle for longer than 60 s: gone, and stays gone
    let (id2, _) = s.create(Some("b".into()), t0).unwrap();
    assert!(s.get(&id2, t0 + Duration::from_secs(61)).is_none());
    assert!(s.get(&id2, t0).is_none());
    assert!(s.get("unknown", t0).is_none());
}

#[test]
fn csrf_mismatch_is_refused() {
    let mut s = Sessions::new(Duration::from_secs(60), Duration::from_secs(300));
    let (_, a) = s.create(Some("a".into()), Instant::now()).unwrap();
    let (_, b) = s.create(Some("b".into()), Instant::now()).unwrap();
    assert!(a.csrf_matches(&a.csrf));
    assert!(!a.csrf_matches(&b.csrf));
    assert!(!a.csrf_matches(""));
    assert!(!a.csrf_matches(&a.csrf[..63]));
    let user = super::auth::SignedIn {
        name: "a".into(),
        csrf: a.csrf.clone(),
    };
    assert!(user.check_csrf(&a.csrf).is_ok());
    let refused = user.check_csrf(&b.csrf).unwrap_err();
    assert_eq!(refused.status(), axum::http::StatusCode::FORBIDDEN);
    assert!(constant_time_eq(b"abc", b"abc") && !constant_time_eq(b"abc", b"abd"));
}

#[test]
fn cookies_are_http_only_strict_and_parsed_strictly() {
    let id = "ab".repeat(32);
    let c = set_cookie(&id, Duration::from_secs(60), false);
    assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && !c.contains("Secure"));
    assert!(set_cookie(&id, Duration::from_secs(60), true).contains("; Secure"));
    assert_eq!(
        session_id_from_cookies(&format!("x=1; heal_session={id}; y=2")),
        Some(id.as_str())
    );
    assert_eq!(session_id_from_cookies("heal_session=../../etc"), None);
    assert_eq!(session_id_from_cookies("other=1"), None);
}

fn png(w: u32, h: u32) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([(x * 7 + y * 3) as u8]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

#[test]
fn uploads_are_checked_by_size_and_content() {
    let shape = datasets::ImageDecoder::new(ImageShape {
        channels: 1,
        height: 28,
        width: 28,
    });
    let shape = &shape;
    let ok = png(40, 30);
    let (kind, hwc) = validate(&ok, 1 << 20, shape).unwrap();
    assert_eq!(kind, ImageKind::Png);
    assert_eq!(hwc.len(), 28 * 28);
    assert_eq!(
        validate(&[], 1 << 20, shape).unwrap_err(),
        UploadError::Empty
    );
    assert!(matches!(
        validate(&ok, 100, shape).unwrap_err(),
        UploadError::TooLarge { limit: 100, .. }
    ));
    let e = validate(b"just some text", 1 << 20, shape).unwrap_err();
    assert!(matches!(e, UploadError::NotAnImage(_)));
    assert!(
        e.to_string().contains("not a PNG, JPEG or DICOM image"),
        "{e}"
    );
    assert!(e.to_string().contains("text"), "{e}");
    assert!(
        validate(b"%PDF-1.7 ...", 1 << 20, shape)
            .unwrap_err()
            .to_string()
            .contains("PDF")
    );
    // the right magic but broken content
    let mut broken = ok.clone();
    broken.truncate(20);
    assert!(matches!(
        validate(&broken, 1 << 20, shape).unwrap_err(),
        UploadError::Undecodable(_)
    ));
    // a DICOM CT slice is read in Hounsfield units and windowed; a truncated one is refused
    let hu: Vec<i16> = (0..64 * 64).map(|i| (i % 64) as i16 * 20 - 600).collect();
    let dcm = datasets::dicom_writer::ct_slice(64, 64, &hu, Some("P1")).unwrap();
    let (kind, hwc) = validate(&dcm, 1 << 20, shape).unwrap();
    assert_eq!((kind, hwc.len()), (ImageKind::Dicom, 28 * 28));
    assert!(hwc.iter().any(|&g| g > 0) && hwc.iter().any(|&g| g < 255));
    let mut cut = dcm.clone();
    cut.truncate(dcm.len() / 2);
    assert!(matches!(
        validate(&cut, 1 << 20, shape).unwrap_err(),
        UploadError::Undecodable(_)
    ));
    assert_eq!(clean_file_name(Some("C:\\scans\\a.png")), "a.png");
    assert_eq!(clean_file_name(Some("../../x\u{7}.png")), "x.png");
    assert_eq!(clean_file_name(None), "upload");
}

fn diagnosis(id: &str) -> Diagnosis {
    Diagnosis {
        id: id.into(),
        unix_ms: 1,
        file_name: "a.png".into(),
        image_ext: "png".into(),
        mode: "local".into(),
        inference: protocol::site::InferenceMode::Released,
        model: "m".into(),
        classes: vec!["x".into(), "y".into()],
        probabilities: vec![0.25, 0.75],
        label: 1,
        class: "y".into(),
        plaintext_label: Some(1),
        ring_degree: 8192,
        timings: StoredTimings::default(),
        bytes_left: 0,
        keys_bytes: 1,
        image_bytes: 1,
        result_bytes: 1,
    }
}

#[test]
fn history_is_per_user_and_validated_on_read() {
    let dir = tempfile::tempdir().unwrap();
    let a = UserFiles::new(dir.path(), "a");
    let b = UserFiles::new(dir.path(), "b");
    let id1 = "0123456789abcdef0123456789abcdef";
    let id2 = "fedcba9876543210fedcba9876543210";
    a.append(&diagnosis(id1)).unwrap();
    a.append(&diagnosis(id2)).unwrap();
    // a corrupted line and a line with an out-of-range label are skipped
    let path = dir.path().join("users/a/history.jsonl");
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{not json\n");
    let mut bad = diagnosis("00000000000000000000000000000000");
    bad.label = 5;
    text.push_str(&serde_json::to_string(&bad).unwrap());
    text.push('\n');
    std::fs::write(&path, text).unwrap();
    let h = a.read().unwrap();
    assert_eq!(h.len(), 2);
    assert_eq!(h[0].id, id2, "newest first");
    assert!(a.find(id1).unwrap().is_some());
    assert!(a.find("../../users").unwrap().is_none());
    assert!(b.read().unwrap().is_empty());
    assert!(b.find(id1).unwrap().is_none());
}

fn reported(round: u64, val_acc: f32, val_auc: f32) -> protocol::message::RoundMetrics {
    protocol::message::RoundMetrics {
        round,
        train_loss: 0.5,
        val_loss: 0.4,
        val_acc,
        val_auc,
        test_acc: f32::NAN,
        test_auc: f32::NAN,
        samples: 10,
        train_s: 1.0,
        encrypt_s: 0.0,
        upload_s: 0.0,
        switch_s: 0.0,
        decrypt_s: 0.0,
        bytes_up: 0,
        bytes_down: 0,
    }
}

#[test]
fn training_outputs_are_read_for_this_hospital() {
    use ops::run_report::{RoundRow, hospital_csv, round_csv};
    let dir = tempfile::tempdir().unwrap();
    let round = |round, test_acc, test_auc| RoundRow {
        round,
        hospitals: 2,
        test_acc,
        test_auc,
        ..Default::default()
    };
    std::fs::write(
        dir.path().join("metrics_per_round.csv"),
        round_csv(&[round(1, f64::NAN, f64::NAN), round(2, 0.8, 0.9)]),
    )
    .unwrap();
    let hospitals = hospital_csv(&[
        (1, reported(1, 0.5, 0.6)),
        (2, reported(1, 0.75, 0.8)),
        (1, reported(2, 0.625, 0.7)),
        (2, reported(2, 0.875, 0.95)),
    ]);
    std::fs::write(dir.path().join("metrics_per_hospital.csv"), &hospitals).unwrap();
    let d = super::training::load(dir.path(), Some(2)).unwrap();
    assert_eq!(d.layout, "simulation");
    assert_eq!(d.rows.len(), 2);
    assert_eq!(d.rows[1].participants, vec![1, 2]);
    assert_eq!(d.rows[1].val_acc, 0.875);
    assert_eq!(d.rows[1].test_auc, 0.9);
    let html = super::training::render(&d, Some(2));
    assert!(html.contains("<svg") && html.contains("<strong>2</strong> rounds completed"));
    // the whole federation's view averages the hospitals
    let all = super::training::load(dir.path(), None).unwrap();
    assert_eq!(all.rows[0].val_acc, 0.625);
    std::fs::write(
        dir.path().join("metrics_per_hospital.csv"),
        hospitals.replacen("\n1,", "\nx,", 1),
    )
    .unwrap();
    assert!(super::training::load(dir.path(), Some(2)).is_err());
    let node = tempfile::tempdir().unwrap();
    let m = reported(1, 0.75, 0.875);
    ops::metrics_file::append(&node.path().join("metrics.csv"), &m).unwrap();
    let d = super::training::load(node.path(), Some(1)).unwrap();
    assert_eq!((d.layout, d.rows.len()), ("node", 1));
    assert_eq!((d.rows[0].val_acc, d.rows[0].val_auc), (0.75, 0.875));
    // a file of other columns is refused, not guessed at
    std::fs::write(
        node.path().join("metrics.csv"),
        "round,train_loss,val_loss,val_acc,val_auc,test_acc,test_auc\n1,0.5,0.4,0.8,0.9,NaN,NaN\n",
    )
    .unwrap();
    assert!(super::training::load(node.path(), Some(1)).is_err());
    assert!(super::training::load(tempfile::tempdir().unwrap().path(), None).is_err());
}

#[test]
fn the_diagnosis_page_states_the_mode_the_server_actually_used() {
    let user = super::auth::SignedIn {
        name: "a".into(),
        csrf: "c".into(),
    };
    let mut d = diagnosis(&"ab".repeat(16));
    d.mode = "remote".into();
    let page = super::diagnose_view::result(&user, &d).0;
    assert!(page.contains("Mode used: <strong id=\"inference-mode\">released (mode b)</strong>"));
    assert!(page.contains("under a secret key made on this node for this request"));
    d.inference = protocol::site::InferenceMode::Collective;
    let page = super::diagnose_view::result(&user, &d).0;
    assert!(page.contains("collective (mode a)"), "{page}");
    assert!(page.contains("under the consortium's collective public key"));
    assert!(!page.contains("(mode (b)):"));
}
