//! Writes one split of a MedMNIST set as PNG files, for trying the folder kinds on real images:
//! `OUT/<class name>/NNNNN.png` (a class folder, `kind = "folder"`), or with `--unlabelled`
//! `OUT/batchNN/NNNNN.png` in folders of 100 and no class anywhere (`kind = "unlabelled"`).
//!
//!     cargo run --release -p datasets --example medmnist_png -- NAME SPLIT OUT [--unlabelled]
//!
//! NAME is read from `$HEAL_DATA_DIR` (28 px); SPLIT is train, val or test.

use std::path::PathBuf;

use datasets::medmnist::{self, MedMnistOptions};

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let unlabelled = args.iter().any(|a| a == "--unlabelled");
    let pos: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    let [name, split, out] = pos[..] else {
        return Err("usage: medmnist_png NAME train|val|test OUT [--unlabelled]".into());
    };
    let data = medmnist::load(name, 28, &MedMnistOptions::default()).map_err(|e| e.to_string())?;
    let set = match split.as_str() {
        "train" => &data.train,
        "val" => &data.val,
        "test" => &data.test,
        other => return Err(format!("split {other:?}: train, val or test")),
    };
    let labels = set.class_labels().map_err(|e| e.to_string())?;
    let (h, w, c) = (set.height(), set.width(), set.channels());
    let images = set.images();
    for (i, label) in labels.iter().enumerate() {
        let folder = if unlabelled {
            format!("batch{:02}", i / 100)
        } else {
            data.info.class_names[*label as usize].replace(['/', ' '], "_")
        };
        let dir = PathBuf::from(out).join(folder);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let px: Vec<u8> = images
            .slice(ndarray::s![i, .., .., ..])
            .iter()
            .copied()
            .collect();
        let color = if c == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        let path = dir.join(format!("{i:05}.png"));
        image::save_buffer(&path, &px, w as u32, h as u32, color)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    println!(
        "{} {split}: {} images written to {out}",
        data.info.name,
        labels.len()
    );
    Ok(())
}
