//! Malformed `.npz` files: each gives a typed error naming the file and the problem.

mod common;

use std::path::{Path, PathBuf};

use datasets::medmnist::{NpzSpec, read_npz};
use datasets::{DatasetError, Task};
use ndarray::{Array, Array2, Array3, Array4, ArrayD, IxDyn};
use ndarray_npy::NpzWriter;

fn spec(channels: usize) -> NpzSpec {
    NpzSpec {
        name: "tiny".into(),
        task: Task::MultiClass,
        channels,
        size: Some(4),
        classes: vec!["a".into(), "b".into(), "c".into()],
    }
}

/// A writer of one archive; `skip` leaves an array out, `replace` swaps one for `custom`.
struct Npz {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

fn write(f: impl FnOnce(&mut NpzWriter<std::fs::File>)) -> Npz {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.npz");
    let mut w = NpzWriter::new_compressed(std::fs::File::create(&path).unwrap());
    f(&mut w);
    w.finish().unwrap();
    Npz { path, _dir: dir }
}

fn images(n: usize) -> Array3<u8> {
    Array3::from_shape_fn((n, 4, 4), |(i, y, x)| (i * 16 + y * 4 + x) as u8)
}

fn labels(n: usize) -> Array2<u8> {
    Array2::from_shape_fn((n, 1), |(i, _)| (i % 3) as u8)
}

fn good(w: &mut NpzWriter<std::fs::File>, skip: &str) {
    for (split, n) in [("train", 6), ("val", 3), ("test", 3)] {
        let img = format!("{split}_images");
        let lab = format!("{split}_labels");
        if img != skip {
            w.add_array(img.as_str(), &images(n)).unwrap();
        }
        if lab != skip {
            w.add_array(lab.as_str(), &labels(n)).unwrap();
        }
    }
}

fn assert_names_file(err: &DatasetError, path: &Path) {
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
}

#[test]
fn a_well_formed_archive_loads_in_any_order() {
    // Arrays written in a scrambled order are still found by name.
    let npz = write(|w| {
        w.add_array("test_labels", &labels(3)).unwrap();
        w.add_array("train_images", &images(6)).unwrap();
        w.add_array("val_labels", &labels(3)).unwrap();
        w.add_array("test_images", &images(3)).unwrap();
        w.add_array("train_labels", &labels(6)).unwrap();
        w.add_array("val_images", &images(3)).unwrap();
    });
    let d = read_npz(&npz.path, &spec(1)).unwrap();
    assert_eq!((d.train.len(), d.val.len(), d.test.len()), (6, 3, 3));
    assert_eq!(d.train.image_bytes(1)[0], 16);
    assert_eq!(d.train.class_labels().unwrap(), &[0, 1, 2, 0, 1, 2]);
    // Labels shaped (n,) are accepted too, and int64 labels.
    let npz = write(|w| {
        good(w, "train_labels");
        let l: Array<i64, _> = Array::from_shape_fn(6, |i| (i % 3) as i64);
        w.add_array("train_labels", &l).unwrap();
    });
    assert!(read_npz(&npz.path, &spec(1)).is_ok());
}

#[test]
fn missing_array() {
    let npz = write(|w| good(w, "val_labels"));
    let err = read_npz(&npz.path, &spec(1)).unwrap_err();
    match &err {
        DatasetError::MissingArray { array, present, .. } => {
            assert_eq!(array, "val_labels");
            assert!(present.contains("train_images"));
        }
        other => panic!("{other:?}"),
    }
    assert_names_file(&err, &npz.path);
}

#[test]
fn wrong_dtype() {
    let npz = write(|w| {
        good(w, "train_images");
        w.add_array("train_images", &images(6).mapv(|v| v as f32))
            .unwrap();
    });
    let err = read_npz(&npz.path, &spec(1)).unwrap_err();
    match &err {
        DatasetError::WrongDtype { array, found, .. } => {
            assert_eq!(array, "train_images");
            assert!(found.contains("f4"), "{found}");
        }
        other => panic!("{other:?}"),
    }
    assert_names_file(&err, &npz.path);
    let npz = write(|w| {
        good(w, "test_labels");
        w.add_array("test_labels", &labels(3).mapv(|v| v as f64))
            .unwrap();
    });
    assert!(matches!(
        read_npz(&npz.path, &spec(1)),
        Err(DatasetError::WrongDtype { .. })
    ));
}

#[test]
fn wrong_shapes() {
    // Not square / wrong size.
    let npz = write(|w| {
        good(w, "val_images");
        w.add_array("val_images", &Array3::<u8>::zeros((3, 4, 5)))
            .unwrap();
    });
    let err = read_npz(&npz.path, &spec(1)).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { array, found, .. } if array == "val_images" && found == &vec![3, 4, 5]),
        "{err:?}"
    );
    assert_names_file(&err, &npz.path);
    // Grey images where RGB is expected.
    let npz = write(|w| good(w, ""));
    assert!(matches!(
        read_npz(&npz.path, &spec(3)),
        Err(DatasetError::WrongShape { .. })
    ));
    // RGB images accepted when expected.
    let npz = write(|w| {
        for (split, n) in [("train", 6), ("val", 3), ("test", 3)] {
            w.add_array(
                format!("{split}_images").as_str(),
                &Array4::<u8>::zeros((n, 4, 4, 3)),
            )
            .unwrap();
            w.add_array(format!("{split}_labels").as_str(), &labels(n))
                .unwrap();
        }
    });
    assert_eq!(read_npz(&npz.path, &spec(3)).unwrap().train.channels(), 3);
    // Label rows do not match the images.
    let npz = write(|w| {
        good(w, "train_labels");
        w.add_array("train_labels", &labels(5)).unwrap();
    });
    let err = read_npz(&npz.path, &spec(1)).unwrap_err();
    assert!(
        matches!(&err, DatasetError::WrongShape { array, .. } if array == "train_labels"),
        "{err:?}"
    );
    // Multi-column labels for a single-label task.
    let npz = write(|w| {
        good(w, "train_labels");
        w.add_array("train_labels", &Array2::<u8>::zeros((6, 2)))
            .unwrap();
    });
    assert!(matches!(
        read_npz(&npz.path, &spec(1)),
        Err(DatasetError::WrongShape { .. })
    ));
    // A 5-D array.
    let npz = write(|w| {
        good(w, "test_images");
        let a: ArrayD<u8> = ArrayD::zeros(IxDyn(&[3, 4, 4, 1, 1]));
        w.add_array("test_images", &a).unwrap();
    });
    assert!(matches!(
        read_npz(&npz.path, &spec(1)),
        Err(DatasetError::WrongShape { .. })
    ));
}

#[test]
fn labels_out_of_range() {
    let npz = write(|w| {
        good(w, "test_labels");
        let mut l = labels(3);
        l[(2, 0)] = 7;
        w.add_array("test_labels", &l).unwrap();
    });
    let err = read_npz(&npz.path, &spec(1)).unwrap_err();
    match &err {
        DatasetError::LabelOutOfRange {
            what,
            row,
            label,
            classes,
            ..
        } => {
            assert_eq!(
                (what.as_str(), *row, *label, *classes),
                ("test_labels", 2, 7, 3)
            );
        }
        other => panic!("{other:?}"),
    }
    assert_names_file(&err, &npz.path);
    // Negative int64 labels.
    let npz = write(|w| {
        good(w, "val_labels");
        let l: Array2<i64> = Array2::from_elem((3, 1), -1);
        w.add_array("val_labels", &l).unwrap();
    });
    assert!(matches!(
        read_npz(&npz.path, &spec(1)),
        Err(DatasetError::LabelOutOfRange { .. })
    ));
}

#[test]
fn truncated_corrupt_and_empty_archives() {
    let tmp = tempfile::tempdir().unwrap();
    let real = std::fs::read(common::real_file("breastmnist.npz")).unwrap();

    let truncated = tmp.path().join("truncated.npz");
    std::fs::write(&truncated, &real[..real.len() * 3 / 5]).unwrap();
    let err = read_npz(&truncated, &spec(1)).unwrap_err();
    assert!(
        matches!(err, DatasetError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert_names_file(&err, &truncated);

    let garbage = tmp.path().join("garbage.npz");
    std::fs::write(&garbage, b"this is not a zip archive at all").unwrap();
    let err = read_npz(&garbage, &spec(1)).unwrap_err();
    assert!(
        matches!(err, DatasetError::CorruptArchive { .. }),
        "{err:?}"
    );
    assert_names_file(&err, &garbage);

    let empty = tmp.path().join("empty.npz");
    std::fs::write(&empty, b"").unwrap();
    let err = read_npz(&empty, &spec(1)).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
    assert_names_file(&err, &empty);

    // Damaged compressed data inside an intact zip directory.
    let npz = write(|w| good(w, ""));
    let mut bytes = std::fs::read(&npz.path).unwrap();
    // The first member's data starts after its local header (30 bytes + name); flip bytes
    // well inside it.
    for b in &mut bytes[60..90] {
        *b ^= 0xA5;
    }
    let damaged = tmp.path().join("damaged.npz");
    std::fs::write(&damaged, &bytes).unwrap();
    let err = read_npz(&damaged, &spec(1)).unwrap_err();
    assert!(
        matches!(
            err,
            DatasetError::CorruptArray { .. } | DatasetError::CorruptArchive { .. }
        ),
        "{err:?}"
    );
    assert_names_file(&err, &damaged);

    let missing = tmp.path().join("nope.npz");
    let err = read_npz(&missing, &spec(1)).unwrap_err();
    assert!(matches!(err, DatasetError::Io { .. }));
    assert_names_file(&err, &missing);
}
