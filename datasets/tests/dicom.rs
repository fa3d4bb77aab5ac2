//! DICOM through dicom-rs: files written here by dicom-rs itself (CT in Hounsfield units,
//! 8/12/16-bit, signed and unsigned, MONOCHROME1/2, multi-frame) decode to the expected grey
//! values under each window; bad files give errors naming the file and what is wrong; DICOM
//! folders and manifests load with their patients. pydicom's sample files (MIT, installed by
//! `.ci/run` from PyPI) are decoded too when `HEAL_PYDICOM_DATA` names their folder.

use std::path::{Path, PathBuf};

use datasets::dicom::{
    DecodeLimits, ExplicitWindow, Window, WindowPreset, decode_dicom, window_to_u8,
};
use datasets::dicom_writer::{DicomSpec, Samples};
use datasets::folder::{ManifestColumns, read_manifest};
use datasets::{DatasetConfig, ImageDecoder, ImageShape, ResizePolicy, load_dataset};
use dicom_dictionary_std::tags;

type Spec<'a> = DicomSpec<'a>;

/// The file's bytes; the writer's own errors fail the test.
fn dicom_bytes(spec: &Spec, values: &[i32]) -> Vec<u8> {
    datasets::dicom_writer::dicom_bytes(spec, values).unwrap()
}

fn decode(bytes: &[u8], window: Window) -> datasets::Result<datasets::dicom::DicomImage> {
    decode_dicom(bytes, Path::new("t.dcm"), window, &DecodeLimits::default())
}

fn explicit(center: f64, width: f64) -> Window {
    Window::Explicit(ExplicitWindow { center, width })
}

#[test]
fn ct_pixels_become_hounsfield_units_then_windowed_grey() {
    // stored values 0..16 with slope 2, intercept −1024: HU −1024, −1022, …, −994; one pixel of
    // bone (stored 1500 → 1976 HU)
    let mut values: Vec<i32> = (0..16).collect();
    values[15] = 1500;
    let spec = Spec {
        rescale: Some((2.0, -1024.0)),
        ..Spec::default()
    };
    let bytes = dicom_bytes(&spec, &values);
    let img = decode(&bytes, Window::Preset(WindowPreset::Lung)).unwrap();
    assert_eq!((img.rows, img.columns, img.frames.len()), (4, 4, 1));
    assert_eq!(img.patient.as_deref(), Some("PAT-001"));
    for (k, &v) in values.iter().enumerate() {
        let hu = v as f64 * 2.0 - 1024.0;
        assert_eq!(
            img.frames[0][k],
            window_to_u8(hu, -600.0, 1500.0),
            "pixel {k}"
        );
    }
    // air is black and bone is white under the abdomen window
    let abd = decode(&bytes, Window::Preset(WindowPreset::Abdomen)).unwrap();
    assert_eq!(abd.frames[0][0], 0);
    assert_eq!(abd.frames[0][15], 255);
    // an explicit window centred on the ramp spreads it over the grey range
    let e = decode(&bytes, explicit(-1009.0, 32.0)).unwrap();
    assert!(
        e.frames[0][0] < 20 && e.frames[0][14] > 200,
        "{:?}",
        e.frames[0]
    );
    assert!(e.frames[0].windows(2).take(14).all(|w| w[1] >= w[0]));
}

#[test]
fn bit_depths_signs_and_monochrome1() {
    // 8-bit unsigned, auto window without a file window: min–max
    let v8: Vec<i32> = (0..16).map(|v| v * 10).collect();
    let img = decode(
        &dicom_bytes(
            &Spec {
                samples: Samples::U8,
                ..Spec::default()
            },
            &v8,
        ),
        Window::default(),
    )
    .unwrap();
    assert_eq!(img.frames[0][0], 0);
    assert_eq!(img.frames[0][15], 255);
    // 12-bit stored in 16, the file's own window (centre 2048, width 4096)
    let v12: Vec<i32> = (0..16).map(|v| v * 273).collect();
    let spec12 = Spec {
        samples: Samples::U16 { stored: 12 },
        window: Some((2048.0, 4096.0)),
        ..Spec::default()
    };
    let img = decode(&dicom_bytes(&spec12, &v12), Window::default()).unwrap();
    for (k, &v) in v12.iter().enumerate() {
        assert_eq!(img.frames[0][k], window_to_u8(v as f64, 2048.0, 4096.0));
    }
    // 16-bit signed: negative values are read as such
    let vs: Vec<i32> = (-8..8).map(|v| v * 100).collect();
    let img = decode(&dicom_bytes(&Spec::default(), &vs), explicit(0.0, 1600.0)).unwrap();
    assert!(img.frames[0][0] < 10 && img.frames[0][8] > 120 && img.frames[0][8] < 135);
    // MONOCHROME1 is inverted: the highest value is black
    let m1 = decode(
        &dicom_bytes(
            &Spec {
                photometric: "MONOCHROME1",
                ..Spec::default()
            },
            &vs,
        ),
        explicit(0.0, 1600.0),
    )
    .unwrap();
    for (a, b) in m1.frames[0].iter().zip(&img.frames[0]) {
        assert_eq!(*a, 255 - *b);
    }
}

#[test]
fn multi_frame_gives_one_image_per_frame() {
    let spec = Spec {
        frames: 3,
        rows: 2,
        cols: 3,
        ..Spec::default()
    };
    let values: Vec<i32> = (0..18).map(|v| (v / 6) * 500).collect();
    let img = decode(&dicom_bytes(&spec, &values), explicit(500.0, 1000.0)).unwrap();
    assert_eq!(img.frames.len(), 3);
    assert!(img.frames[0].iter().all(|&g| g == img.frames[0][0]));
    assert!(img.frames[0][0] < img.frames[1][0] && img.frames[1][0] < img.frames[2][0]);
    // through the decoder: every frame resized to the network's input
    let dec = ImageDecoder {
        window: explicit(500.0, 1000.0),
        resize: ResizePolicy::Pad,
        ..ImageDecoder::new(ImageShape {
            channels: 3,
            height: 8,
            width: 8,
        })
    };
    let f = dec
        .decode(&dicom_bytes(&spec, &values), Path::new("m.dcm"))
        .unwrap();
    assert_eq!(f.images.len(), 3);
    assert!(f.images.iter().all(|im| im.len() == 8 * 8 * 3));
}

#[test]
fn bad_files_are_refused_with_their_reason() {
    let good = dicom_bytes(&Spec::default(), &[0; 16]);
    let err = |b: &[u8]| decode(b, Window::default()).unwrap_err().to_string();
    // not DICOM at all, truncated, cut in the pixel data
    assert!(err(b"not a dicom file").contains("not a DICOM"));
    assert!(err(&good[..200]).contains("t.dcm"));
    let cut = err(&good[..good.len() - 10]);
    assert!(cut.contains("t.dcm"), "{cut}");
    // no pixel data
    let mut obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(good.as_slice())
        .unwrap();
    obj.remove_element(tags::PIXEL_DATA);
    let mut no_pixels = Vec::new();
    obj.write_all(&mut no_pixels).unwrap();
    assert!(
        err(&no_pixels).contains("no Pixel Data"),
        "{}",
        err(&no_pixels)
    );
    // colour images are not grayscale
    let rgb = dicom_bytes(
        &Spec {
            photometric: "RGB",
            ..Spec::default()
        },
        &[0; 16],
    );
    assert!(err(&rgb).contains("not grayscale"));
    // a header announcing a huge image is refused before any decoding (decompression bomb)
    let bomb = dicom_bytes(
        &Spec {
            rows: 60000,
            cols: 60000,
            ..Spec::default()
        },
        &[0; 16],
    );
    let e = decode_dicom(
        &bomb,
        Path::new("bomb.dcm"),
        Window::default(),
        &DecodeLimits {
            max_side: 8192,
            ..DecodeLimits::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("bomb.dcm") && e.contains("60000"), "{e}");
    let frames = dicom_bytes(
        &Spec {
            rows: 4096,
            cols: 4096,
            frames: 100,
            ..Spec::default()
        },
        &[0; 16],
    );
    assert!(err(&frames).contains("exceed the limit"));
    // pixel data shorter than the header says
    let short = dicom_bytes(
        &Spec {
            rows: 8,
            ..Spec::default()
        },
        &[0; 16],
    );
    assert!(err(&short).contains("t.dcm"));
    // a window of width 0 is refused
    assert!(decode(&good, explicit(0.0, 0.0)).is_err());
}

#[test]
fn dicom_manifests_group_by_patient_and_load_through_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let mut csv = String::from("path,label\n");
    for i in 0..12 {
        let patient = format!("P{}", i / 3);
        let bytes = dicom_bytes(
            &Spec {
                patient: Some(&patient),
                rows: 16,
                cols: 16,
                rescale: Some((1.0, -1024.0)),
                ..Spec::default()
            },
            &(0..256).map(|v| v * 4 + i * 20).collect::<Vec<i32>>(),
        );
        let name = format!("scan{i}.dcm");
        std::fs::write(tmp.path().join(&name), bytes).unwrap();
        csv.push_str(&format!(
            "{name},{}\n",
            if i % 2 == 0 { "cyst" } else { "normal" }
        ));
    }
    let manifest = tmp.path().join("ct.csv");
    std::fs::write(&manifest, csv).unwrap();
    let shape = ImageShape {
        channels: 1,
        height: 32,
        width: 32,
    };
    let m = read_manifest(
        &manifest,
        &ManifestColumns::default(),
        &ImageDecoder::new(shape),
        None,
    )
    .unwrap();
    assert_eq!(m.images.len(), 12);
    assert_eq!(m.class_names, vec!["cyst", "normal"]);
    assert_eq!(m.images.patients().unwrap()[4], "P1");
    let cfg: DatasetConfig = toml::from_str(
        "kind = \"manifest\"\npath = \"ct.csv\"\nchannels = 1\nheight = 32\nwidth = 32\n\
         window = \"abdomen\"\nresize = \"crop\"\nval_fraction = 0.25\ntest_fraction = 0.25\n",
    )
    .unwrap();
    let data = load_dataset(&cfg, tmp.path(), false).unwrap();
    assert_eq!(data.info.height, 32);
    assert_eq!(data.train.len() + data.val.len() + data.test.len(), 12);
    // a patient's scans stay on one side of every split
    let of = |s: &datasets::ImageSet| -> std::collections::BTreeSet<String> {
        s.patients().unwrap().iter().cloned().collect()
    };
    let (tr, va, te) = (of(&data.train), of(&data.val), of(&data.test));
    assert!(tr.is_disjoint(&va) && tr.is_disjoint(&te) && va.is_disjoint(&te));
    assert_eq!(tr.len() + va.len() + te.len(), 4);
    // a window with an unknown key, a side over 512 and an unknown preset are refused
    for bad in [
        "window = { center = 1, width = 2, level = 3 }",
        "window = \"liver\"",
    ] {
        let text = format!(
            "kind = \"manifest\"\npath = \"ct.csv\"\nchannels = 1\nheight = 32\nwidth = 32\n{bad}\n"
        );
        assert!(toml::from_str::<DatasetConfig>(&text).is_err(), "{bad}");
    }
    let big: DatasetConfig = toml::from_str(
        "kind = \"manifest\"\npath = \"ct.csv\"\nchannels = 1\nheight = 640\nwidth = 32\n",
    )
    .unwrap();
    assert!(
        load_dataset(&big, tmp.path(), false)
            .unwrap_err()
            .to_string()
            .contains("512")
    );
}

/// pydicom's sample files, when `.ci/run` installed them (`HEAL_PYDICOM_DATA`).
fn pydicom_files() -> Option<PathBuf> {
    let dir = std::env::var_os("HEAL_PYDICOM_DATA").map(PathBuf::from)?;
    assert!(
        dir.join("CT_small.dcm").is_file(),
        "HEAL_PYDICOM_DATA={} has no CT_small.dcm",
        dir.display()
    );
    Some(dir)
}

#[test]
fn pydicom_samples_decode_or_are_refused_by_name() {
    let Some(dir) = pydicom_files() else {
        eprintln!("skipped: HEAL_PYDICOM_DATA is not set (.ci/run installs pydicom's samples)");
        return;
    };
    let lim = DecodeLimits::default();
    let load = |name: &str, w: Window| datasets::dicom::load_dicom(&dir.join(name), w, &lim);
    // CT 128×128, signed 16-bit, rescale −1024: abdomen window has both black and grey pixels
    let ct = load("CT_small.dcm", Window::Preset(WindowPreset::Abdomen)).unwrap();
    assert_eq!((ct.rows, ct.columns), (128, 128));
    assert!(ct.patient.is_some());
    let f = &ct.frames[0];
    assert!(f.contains(&0) && f.iter().any(|&g| g > 50 && g < 255));
    // the same MR image uncompressed, RLE and JPEG 2000 lossless decodes to the same pixels
    let mr = load("MR_small.dcm", Window::default()).unwrap();
    for compressed in ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"] {
        let c = load(compressed, Window::default()).unwrap();
        assert_eq!(c.frames, mr.frames, "{compressed}");
    }
    // JPEG-LS is not decoded by the pure-Rust codecs: refused by name
    let e = load("MR_small_jpeg_ls_lossless.dcm", Window::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("JPEG-LS") && e.contains("not supported"), "{e}");
    // colour and truncated files are refused
    assert!(
        load("SC_rgb_rle.dcm", Window::default())
            .unwrap_err()
            .to_string()
            .contains("not grayscale")
    );
    assert!(load("MR_truncated.dcm", Window::default()).is_err());
    // CT in JPEG 2000 (14 bits stored, rescaled to HU) decodes
    let j2k = load("693_J2KI.dcm", Window::Preset(WindowPreset::Abdomen)).unwrap();
    assert_eq!((j2k.rows, j2k.columns), (512, 512));
    assert!(j2k.frames[0].iter().any(|&g| g > 0 && g < 255));
    // 12-bit JPEG extended is beyond the pure-Rust JPEG decoder: refused, naming the syntax
    let e = load("JPEG-lossy.dcm", Window::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("JPEG-lossy.dcm") && e.contains("JPEG Extended"),
        "{e}"
    );
}

#[test]
fn jpeg_baseline_written_by_dicom_rs_decodes() {
    use dicom_pixeldata::Transcode;
    let values: Vec<i32> = (0..64 * 64).map(|i| (i % 64) * 4).collect();
    let spec = Spec {
        samples: Samples::U8,
        rows: 64,
        cols: 64,
        ..Spec::default()
    };
    let bytes = dicom_bytes(&spec, &values);
    let plain = decode(&bytes, explicit(127.5, 256.0)).unwrap();
    let mut obj = dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Always)
        .from_reader(bytes.as_slice())
        .unwrap();
    obj.transcode(&dicom_transfer_syntax_registry::entries::JPEG_BASELINE.erased())
        .unwrap();
    let mut jpeg = Vec::new();
    obj.write_all(&mut jpeg).unwrap();
    let img = decode(&jpeg, explicit(127.5, 256.0)).unwrap();
    // lossy: close to the original ramp
    let err = img.frames[0]
        .iter()
        .zip(&plain.frames[0])
        .map(|(a, b)| (*a as i32 - *b as i32).abs())
        .max()
        .unwrap();
    assert!(err <= 12, "JPEG error {err}");
}
