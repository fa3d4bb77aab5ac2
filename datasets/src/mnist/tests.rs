use std::io::Write;

use proptest::prelude::*;

use super::*;

fn images(n: u32, h: u32, w: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x803, n, h, w] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend((0..(n * h * w) as usize).map(fill));
    b
}

fn labels(ls: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for v in [0x801, ls.len() as u32] {
        b.extend_from_slice(&v.to_be_bytes());
    }
    b.extend_from_slice(ls);
    b
}

fn gz(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A folder of the four files: 6 training and 3 test images of 4×4, pixel = image index.
fn folder() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let files = [
        gz(&images(6, 4, 4, |i| (i / 16) as u8)),
        gz(&labels(&[5, 0, 4, 1, 9, 2])),
        gz(&images(3, 4, 4, |i| 100 + (i / 16) as u8)),
        gz(&labels(&[7, 2, 1])),
    ];
    for ((name, _), bytes) in FILES.iter().zip(files) {
        std::fs::write(d.path().join(name), bytes).unwrap();
    }
    d
}

#[test]
fn a_folder_of_idx_files_loads_into_three_splits() {
    let d = folder();
    let data = load(d.path(), 2, false).unwrap();
    assert_eq!(
        (data.train.len(), data.val.len(), data.test.len()),
        (4, 2, 3)
    );
    assert_eq!(data.info.num_classes, 10);
    assert_eq!(
        (data.info.height, data.info.width, data.info.channels),
        (4, 4, 1)
    );
    assert_eq!(data.train.class_labels().unwrap(), &[5, 0, 4, 1]);
    assert_eq!(data.val.class_labels().unwrap(), &[9, 2]);
    assert_eq!(data.val.image_bytes(0), &[4; 16]);
    assert_eq!(data.test.image_bytes(2), &[102; 16]);
    // the authors' md5 sums are not these files'
    let e = load(d.path(), 2, true).unwrap_err();
    assert!(
        matches!(&e, DatasetError::BadIdx { message, .. } if message.contains("f68b3c2dcbeaaa9fbdd348bbdeb94873")),
        "{e}"
    );
    let e = load(d.path(), 6, false).unwrap_err();
    assert!(e.to_string().contains("leaves none to train on"), "{e}");
    std::fs::remove_file(d.path().join(FILES[3].0)).unwrap();
    let e = load(d.path(), 2, false).unwrap_err();
    assert!(
        matches!(&e, DatasetError::MissingMnist { missing, .. } if missing == FILES[3].0),
        "{e}"
    );
}

#[test]
fn damaged_files_are_refused_with_the_numbers() {
    let d = folder();
    std::fs::write(d.path().join(FILES[1].0), gz(&labels(&[5, 0, 4, 1, 9]))).unwrap();
    let e = load(d.path(), 1, false).unwrap_err();
    assert!(
        e.to_string().contains("6 training images with 5 labels"),
        "{e}"
    );
    std::fs::write(d.path().join(FILES[1].0), gz(&labels(&[5, 0, 4, 1, 9, 12]))).unwrap();
    let e = load(d.path(), 1, false).unwrap_err();
    assert!(e.to_string().contains("label 5 is 12"), "{e}");
    std::fs::write(d.path().join(FILES[0].0), b"not gzip").unwrap();
    let e = load(d.path(), 1, false).unwrap_err();
    assert!(e.to_string().contains("not a gzip stream"), "{e}");
    // a header that announces more than the bytes hold: refused before any allocation
    let mut big = images(1, 28, 28, |_| 0);
    big[4..8].copy_from_slice(&60_000u32.to_be_bytes());
    assert!(
        parse_images(&big)
            .unwrap_err()
            .contains("where 60000 images of 28×28 have")
    );
    big[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(parse_images(&big).unwrap_err().contains("at most"));
    let mut wrong = images(1, 2, 2, |_| 0);
    wrong[3] = 0x01;
    assert!(
        parse_images(&wrong)
            .unwrap_err()
            .contains("magic 0x00000801")
    );
    assert!(
        parse_labels(&images(1, 2, 2, |_| 0))
            .unwrap_err()
            .contains("magic 0x00000803")
    );
}

#[test]
fn a_gzip_bomb_stops_at_the_bound() {
    let zeros = vec![0u8; (MAX_INFLATED + 1024) as usize];
    let e = inflate(&gz(&zeros)).unwrap_err();
    assert!(e.contains("more than"), "{e}");
}

#[test]
fn the_shared_files_are_mnist() {
    let dir = crate::medmnist::workspace_data_dir().join("../mnist");
    if !dir.join(FILES[0].0).is_file() {
        eprintln!("skipped: no MNIST files at {}", dir.display());
        return;
    }
    let data = load(&dir, 5000, true).unwrap();
    assert_eq!(
        (data.train.len(), data.val.len(), data.test.len()),
        (55_000, 5_000, 10_000)
    );
    assert_eq!((data.info.height, data.info.width), (28, 28));
    // the well-known first labels of each file
    assert_eq!(&data.train.class_labels().unwrap()[..5], &[5, 0, 4, 1, 9]);
    assert_eq!(&data.test.class_labels().unwrap()[..5], &[7, 2, 1, 0, 4]);
    let counts = data.test.class_counts(10);
    assert_eq!(
        counts,
        vec![980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn no_bytes_make_the_parsers_panic(b in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = parse_images(&b);
        let _ = parse_labels(&b);
        let _ = inflate(&b);
    }

    #[test]
    fn headers_with_any_numbers_are_checked(n in any::<u32>(), h in any::<u32>(), w in any::<u32>(), extra in 0usize..64) {
        let mut b = Vec::new();
        for v in [0x803, n, h, w] {
            b.extend_from_slice(&v.to_be_bytes());
        }
        b.extend(std::iter::repeat_n(0u8, extra));
        let ok = parse_images(&b).is_ok();
        prop_assert_eq!(ok, n > 0 && h > 0 && w > 0 && (n as u64) * (h as u64) * (w as u64) == extra as u64
            && (n as usize) <= MAX_IMAGES && (h as usize) <= MAX_SIDE && (w as usize) <= MAX_SIDE);
    }
}
