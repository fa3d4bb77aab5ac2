//! Plaintext accuracy of several trained networks and of the mean of their softmaxes, on the
//! validation and test splits: whether an ensemble would lift a task (docs/TRANSFER.md).
//!
//!     cargo run --release -p client --example ensemble -- CONFIG.toml NET.json NET.json…

use std::path::PathBuf;

use anyhow::{Context, bail};
use client::infer::EvalData;
use client::infer::eval_split::load_split;
use training::metrics::{argmax, softmax};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = PathBuf::from(args.first().context("CONFIG.toml NET.json NET.json…")?);
    if args.len() < 3 {
        bail!("name the config and at least two networks");
    }
    let nets = args[1..]
        .iter()
        .map(|p| training::export::read_network(&PathBuf::from(p)).with_context(|| p.clone()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for split in ["val", "test"] {
        let (first, prep) = &nets[0];
        let data = EvalData::Config(config.clone());
        let imgs = load_split(&data, split, None, &first.network, prep, None, false)?;
        let n = imgs.labels.len();
        let mut mean: Vec<Vec<f64>> = vec![Vec::new(); n];
        let mut members = Vec::new();
        for (file, _) in &nets {
            let mut correct = 0usize;
            for (i, px) in imgs.pixels.iter().enumerate() {
                let y = file.network.forward(&file.network.normalize_hwc(px)?)?;
                let p = softmax(&y.iter().map(|&v| f64::from(v)).collect::<Vec<_>>());
                if mean[i].is_empty() {
                    mean[i] = vec![0.0; p.len()];
                }
                if mean[i].len() != p.len() {
                    bail!("the networks give different numbers of classes");
                }
                for (m, v) in mean[i].iter_mut().zip(&p) {
                    *m += v;
                }
                correct += usize::from(argmax(&p) as u32 == imgs.labels[i]);
            }
            members.push(format!("{:.4}", correct as f64 / n as f64));
        }
        let correct = mean
            .iter()
            .zip(&imgs.labels)
            .filter(|(m, l)| argmax(m) as u32 == **l)
            .count();
        println!(
            "{split} ({n} images): members {} — mean of their softmaxes {:.4}",
            members.join(", "),
            correct as f64 / n as f64
        );
    }
    Ok(())
}
