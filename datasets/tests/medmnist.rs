//! The real MedMNIST files: md5, counts, shapes, labels; md5 mismatch; offline; download.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;

use datasets::medmnist::{self, MedMnistOptions, catalog_entry};
use datasets::{DatasetError, Labels};

fn offline(dir: &Path) -> MedMnistOptions {
    MedMnistOptions {
        data_dir: Some(dir.to_path_buf()),
        offline: true,
        progress: false,
        ..MedMnistOptions::default()
    }
}

#[test]
fn real_files_match_the_catalogue() {
    let dir = common::data_dir();
    for name in ["breastmnist", "retinamnist", "bloodmnist", "organamnist"] {
        common::real_file(&format!("{name}.npz"));
        let entry = catalog_entry(name).unwrap();
        let data = medmnist::load(name, 28, &offline(&dir)).unwrap();
        let counts = [data.train.len(), data.val.len(), data.test.len()];
        assert_eq!(counts, entry.samples, "{name}");
        for split in [&data.train, &data.val, &data.test] {
            assert_eq!((split.height(), split.width()), (28, 28));
            assert_eq!(split.channels(), entry.channels, "{name}");
            let Labels::Class(l) = split.labels() else {
                panic!("{name}: expected class labels")
            };
            assert!(l.iter().all(|&c| (c as usize) < entry.num_classes()));
        }
        // Every class occurs in training.
        assert!(
            data.train
                .class_counts(entry.num_classes())
                .iter()
                .all(|&c| c > 0),
            "{name}"
        );
        assert_eq!(data.info.num_classes, entry.num_classes());
    }
}

#[test]
fn md5_mismatch_names_the_file() {
    let src = common::real_file("breastmnist.npz");
    let tmp = tempfile::tempdir().unwrap();
    let dst = tmp.path().join("breastmnist.npz");
    let mut bytes = std::fs::read(&src).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&dst, &bytes).unwrap();
    let err = medmnist::load("breastmnist", 28, &offline(tmp.path())).unwrap_err();
    match &err {
        DatasetError::Md5Mismatch {
            path,
            expected,
            found,
        } => {
            assert_eq!(path, &dst);
            assert_eq!(expected, "750601b1f35ba3300ea97c75c52ff8f6");
            assert_ne!(found, expected);
        }
        other => panic!("{other:?}"),
    }
    assert!(err.to_string().contains("breastmnist.npz"));
    assert!(err.to_string().contains("md5"));
}

#[test]
fn missing_file_offline_and_unknown_names() {
    let tmp = tempfile::tempdir().unwrap();
    let err = medmnist::load("breastmnist", 28, &offline(tmp.path())).unwrap_err();
    assert!(
        matches!(err, DatasetError::MissingOffline { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("breastmnist.npz"));
    assert!(err.to_string().contains("zenodo.org/records/10519652"));
    assert!(matches!(
        medmnist::load("cifar10", 28, &offline(tmp.path())),
        Err(DatasetError::UnknownDataset { .. })
    ));
    assert!(matches!(
        medmnist::load("breastmnist", 32, &offline(tmp.path())),
        Err(DatasetError::UnknownSize { .. })
    ));
}

/// Serves `body` once per connection for `requests` connections; returns the base URL.
fn serve(body: Vec<u8>, requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(requests) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&body);
        }
    });
    format!("http://{addr}/files")
}

#[test]
fn downloads_with_md5_check() {
    let real = std::fs::read(common::real_file("breastmnist.npz")).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let opts = MedMnistOptions {
        data_dir: Some(tmp.path().join("cache")),
        offline: false,
        verify_md5: true,
        base_url: serve(real.clone(), 1),
        progress: false,
    };
    let data = medmnist::load("breastmnist", 28, &opts).unwrap();
    assert_eq!(data.train.len(), 546);
    assert_eq!(
        std::fs::read(tmp.path().join("cache/breastmnist.npz")).unwrap(),
        real
    );

    // A tampered download is refused and leaves nothing behind.
    let mut bad = real;
    bad[1000] ^= 1;
    let tmp2 = tempfile::tempdir().unwrap();
    let opts = MedMnistOptions {
        data_dir: Some(tmp2.path().to_path_buf()),
        base_url: serve(bad, 1),
        ..opts
    };
    let err = medmnist::load("breastmnist", 28, &opts).unwrap_err();
    assert!(matches!(err, DatasetError::Md5Mismatch { .. }), "{err:?}");
    assert_eq!(std::fs::read_dir(tmp2.path()).unwrap().count(), 0);
}
