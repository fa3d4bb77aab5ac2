//! Image folders and CSV manifests: good inputs load, bad ones give errors naming the file.

use std::path::Path;

use datasets::ImageDecoder;
use datasets::ImageShape;
use datasets::folder::{ManifestColumns, read_class_folder, read_manifest};
use datasets::partition::straddling_patients;
use datasets::{DatasetConfig, DatasetError, load_dataset};

const GREY28: ImageShape = ImageShape {
    channels: 1,
    height: 28,
    width: 28,
};

fn grey28() -> ImageDecoder {
    ImageDecoder::new(GREY28)
}

fn png(path: &Path, w: u32, h: u32, v: u8) {
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([v.wrapping_add((x + y) as u8)]))
        .save(path)
        .unwrap();
}

fn jpeg_rgb(path: &Path, w: u32, h: u32) {
    image::RgbImage::from_fn(w, h, |x, _| image::Rgb([x as u8, 100, 200]))
        .save(path)
        .unwrap();
}

#[test]
fn class_folder_converts_and_labels_by_folder() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["benign", "malignant"] {
        std::fs::create_dir(tmp.path().join(class)).unwrap();
    }
    png(&tmp.path().join("benign/a.png"), 50, 40, 10);
    jpeg_rgb(&tmp.path().join("benign/b.jpg"), 30, 30);
    png(&tmp.path().join("malignant/c.PNG"), 28, 28, 200);
    std::fs::write(tmp.path().join("malignant/notes.txt"), "ignored").unwrap();
    let (set, classes) = read_class_folder(tmp.path(), &grey28()).unwrap();
    assert_eq!(classes, vec!["benign", "malignant"]);
    assert_eq!(set.len(), 3);
    assert_eq!((set.channels(), set.height(), set.width()), (1, 28, 28));
    assert_eq!(set.class_labels().unwrap(), &[0, 0, 1]);
    // An image that was already 28×28 grey is unchanged.
    assert_eq!(set.image_bytes(2)[1], 201);
}

#[test]
fn bad_images_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for class in ["x", "y"] {
        std::fs::create_dir(tmp.path().join(class)).unwrap();
    }
    png(&tmp.path().join("x/ok.png"), 28, 28, 1);
    let empty = tmp.path().join("y/empty.png");
    std::fs::write(&empty, b"").unwrap();
    let err = read_class_folder(tmp.path(), &grey28()).unwrap_err();
    assert!(matches!(err, DatasetError::BadImage { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.png") && err.to_string().contains("0 bytes"));
    std::fs::remove_file(&empty).unwrap();
    let junk = tmp.path().join("y/junk.jpg");
    std::fs::write(&junk, b"\xff\xd8\xff\xe0 not really a jpeg").unwrap();
    let err = read_class_folder(tmp.path(), &grey28()).unwrap_err();
    assert!(matches!(err, DatasetError::BadImage { .. }), "{err:?}");
    assert!(err.to_string().contains("junk.jpg"));
    // One class folder is not a classification set.
    let one = tempfile::tempdir().unwrap();
    std::fs::create_dir(one.path().join("only")).unwrap();
    assert!(matches!(
        read_class_folder(one.path(), &grey28()),
        Err(DatasetError::BadFolder { .. })
    ));
}

/// A manifest of 24 images of 8 patients at 2 sites; returns its path.
fn manifest(dir: &Path) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("img")).unwrap();
    let mut csv = String::from("file,diagnosis,patient,hospital\n");
    for i in 0..24 {
        let name = format!("img/{i}.png");
        png(&dir.join(&name), 32, 32, (i * 10) as u8);
        let label = if i % 3 == 0 { "malignant" } else { "benign" };
        let patient = i % 8;
        let site = if patient < 4 { "north" } else { "south" };
        csv.push_str(&format!("{name},{label},p{patient},{site}\n"));
    }
    let path = dir.join("manifest.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

fn columns() -> ManifestColumns {
    ManifestColumns {
        path: "file".into(),
        label: "diagnosis".into(),
        patient: Some("patient".into()),
        site: Some("hospital".into()),
        split: None,
    }
}

#[test]
fn manifest_with_patients_and_sites() {
    let tmp = tempfile::tempdir().unwrap();
    let path = manifest(tmp.path());
    let m = read_manifest(&path, &columns(), &grey28(), None).unwrap();
    assert_eq!(m.class_names, vec!["benign", "malignant"]);
    assert_eq!(m.images.len(), 24);
    assert_eq!(m.images.class_labels().unwrap()[..3], [1, 0, 0]);
    assert_eq!(m.images.patients().unwrap()[9], "p1");
    assert_eq!(m.images.sites().unwrap()[5], "south");

    // Through a config: split by patient, no patient in two splits.
    let cfg: DatasetConfig = toml::from_str(
        "kind = \"manifest\"\npath = \"manifest.csv\"\nchannels = 1\nheight = 28\nwidth = 28\n\
         val_fraction = 0.25\ntest_fraction = 0.25\n\
         [columns]\npath = \"file\"\nlabel = \"diagnosis\"\npatient = \"patient\"\n",
    )
    .unwrap();
    let d = load_dataset(&cfg, tmp.path(), false).unwrap();
    assert_eq!(d.train.len() + d.val.len() + d.test.len(), 24);
    assert!(!d.test.is_empty() && !d.val.is_empty());
    let all: Vec<String> = [&d.train, &d.val, &d.test]
        .iter()
        .flat_map(|s| s.patients().unwrap().to_vec())
        .collect();
    let (a, b) = (d.train.len(), d.train.len() + d.val.len());
    let sets = vec![(0..a).collect(), (a..b).collect(), (b..all.len()).collect()];
    assert!(straddling_patients(&all, &sets).is_empty());
}

#[test]
fn manifest_errors_name_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let path = manifest(tmp.path());

    // A column that is not there.
    let cols = ManifestColumns {
        patient: Some("patient_id".into()),
        ..columns()
    };
    let err = read_manifest(&path, &cols, &grey28(), None).unwrap_err();
    match &err {
        DatasetError::MissingColumn {
            column, present, ..
        } => {
            assert_eq!(column, "patient_id");
            assert!(present.contains("patient"));
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("manifest.csv"));

    // A row pointing at a missing file.
    std::fs::remove_file(tmp.path().join("img/7.png")).unwrap();
    let err = read_manifest(&path, &columns(), &grey28(), None).unwrap_err();
    match &err {
        DatasetError::MissingImage { row, file, .. } => {
            assert_eq!(*row, 7);
            assert!(file.ends_with("img/7.png"));
        }
        other => panic!("{other:?}"),
    }

    // Integer labels out of the given classes.
    let bad = tmp.path().join("ints.csv");
    std::fs::write(&bad, "path,label\nimg/0.png,0\nimg/1.png,5\n").unwrap();
    let names = vec!["a".to_string(), "b".to_string()];
    let err =
        read_manifest(&bad, &ManifestColumns::default(), &grey28(), Some(&names)).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::LabelOutOfRange {
                row: 1,
                label: 5,
                classes: 2,
                ..
            }
        ),
        "{err:?}"
    );

    // A text label that is not one of the given classes.
    let bad = tmp.path().join("names.csv");
    std::fs::write(&bad, "path,label\nimg/0.png,a\nimg/1.png,zebra\n").unwrap();
    let err =
        read_manifest(&bad, &ManifestColumns::default(), &grey28(), Some(&names)).unwrap_err();
    assert!(err.to_string().contains("zebra"), "{err}");

    // A bad split value and an empty manifest.
    let bad = tmp.path().join("split.csv");
    std::fs::write(
        &bad,
        "path,label,split\nimg/0.png,a,train\nimg/1.png,b,holdout\n",
    )
    .unwrap();
    let cols = ManifestColumns {
        split: Some("split".into()),
        ..ManifestColumns::default()
    };
    assert!(
        read_manifest(&bad, &cols, &grey28(), None)
            .unwrap_err()
            .to_string()
            .contains("holdout")
    );
    let empty = tmp.path().join("empty.csv");
    std::fs::write(&empty, "path,label\n").unwrap();
    let err = read_manifest(&empty, &ManifestColumns::default(), &grey28(), None).unwrap_err();
    assert!(matches!(err, DatasetError::BadManifest { .. }), "{err:?}");
    assert!(err.to_string().contains("empty.csv"));
}
