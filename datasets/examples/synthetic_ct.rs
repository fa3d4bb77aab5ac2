//! Writes synthetic CT series for trying HEAL without patient data: `SERIES` series of `SLICES`
//! slices each (`SIDE`² pixels, 16-bit, Hounsfield units through a rescale), one patient and
//! study per series, every slice of a series of one class (normal, cyst, tumour in turn:
//! `datasets::dicom_writer::synthetic_hu`), and `manifest.csv` (path,label) for training.
//!
//!     cargo run --release -p datasets --example synthetic_ct -- OUT [SERIES] [SLICES] [SIDE]

use std::path::PathBuf;

use datasets::dicom_writer::{DicomSpec, dicom_bytes, synthetic_hu};

const CLASSES: [&str; 3] = ["normal", "cyst", "tumor"];
/// Medical Connections' free UID root; a run's own component keeps two runs apart in one PACS.
const ROOT: &str = "1.2.826.0.1.3680043.8.498";

fn arg(args: &[String], k: usize, default: usize) -> Result<usize, String> {
    args.get(k).map_or(Ok(default), |a| {
        a.parse()
            .map_err(|_| format!("argument {k}: {a:?} is not a count"))
    })
}

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let Some(out) = args.get(1).map(PathBuf::from) else {
        return Err("usage: synthetic_ct OUT [SERIES=3] [SLICES=10] [SIDE=256]".into());
    };
    let (series, slices, side) = (arg(&args, 2, 3)?, arg(&args, 3, 10)?, arg(&args, 4, 256)?);
    if !(8..=1024).contains(&side) || series == 0 || slices == 0 || series * slices > 100_000 {
        return Err(format!(
            "{series} series of {slices} slices of {side}²: 8 ≤ SIDE ≤ 1024, at most 100000 slices"
        ));
    }
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() % 1_000_000_000_000 + 1);
    let mut manifest = String::from("path,label\n");
    for s in 0..series {
        let class = s % CLASSES.len();
        let (study, se) = (
            format!("{ROOT}.{run}.{}", s + 1),
            format!("{ROOT}.{run}.{}.1", s + 1),
        );
        let patient = format!("SYN-{:03}", s + 1);
        let dir = out.join(format!("series-{:03}", s + 1));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for k in 0..slices {
            let sop = format!("{se}.{}", k + 1);
            let hu = synthetic_hu(side, class, (s * slices + k) as u32);
            let stored: Vec<i32> = hu.iter().map(|&h| h as i32 + 1024).collect();
            let bytes = dicom_bytes(
                &DicomSpec {
                    rows: side as u16,
                    cols: side as u16,
                    rescale: Some((1.0, -1024.0)),
                    patient: Some(&patient),
                    uids: Some([&study, &se, &sop]),
                    ..Default::default()
                },
                &stored,
            )
            .map_err(|e| e.to_string())?;
            let name = format!("series-{:03}/slice-{:03}.dcm", s + 1, k + 1);
            std::fs::write(out.join(&name), bytes).map_err(|e| format!("{name}: {e}"))?;
            manifest.push_str(&format!("{name},{}\n", CLASSES[class]));
        }
    }
    std::fs::write(out.join("manifest.csv"), manifest).map_err(|e| e.to_string())?;
    println!(
        "wrote {series} series of {slices} slices ({side}²) and manifest.csv to {}",
        out.display()
    );
    Ok(())
}
