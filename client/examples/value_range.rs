//! The largest |value| after each layer of a trained network over a split (plaintext): what a
//! deep plan's values reach on real images, against the bound the refresh's mask is sized for.
//!
//!     cargo run --release -p client --example value_range -- NET.json CONFIG.toml [SPLIT]

use std::path::PathBuf;

use anyhow::Context;
use client::infer::EvalData;
use client::infer::eval_split::load_split;
use he_agg::infer::Network;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (net_path, config) = (
        PathBuf::from(args.first().context("NET.json")?),
        PathBuf::from(args.get(1).context("CONFIG.toml")?),
    );
    let split = args.get(2).map(String::as_str).unwrap_or("test");
    let (file, prep) = training::export::read_network(&net_path)?;
    let net = file.network.clone();
    let data = EvalData::Config(config);
    let imgs = load_split(&data, split, None, &net, &prep, None, false)?;
    let xs: Vec<Vec<f32>> = imgs
        .pixels
        .iter()
        .map(|p| net.normalize_hwc(p))
        .collect::<Result<_, _>>()?;
    let layers = net.layers();
    let [c, h, w] = net.image_input();
    println!("{} images of {split}; {} layers", xs.len(), layers.len());
    for k in 1..=layers.len() {
        let part = Network::new([c, h, w], layers[..k].to_vec())?;
        let (mut top, mut over) = (0f32, 0usize);
        for x in &xs {
            let y = part.forward(x)?;
            let m = y.iter().fold(0f32, |m, v| m.max(v.abs()));
            top = top.max(m);
            if m > 1024.0 {
                over += 1;
            }
        }
        println!(
            "after layer {k:2} ({}): max |value| {top:.3e} (log2 {:.1}); {over} images past 2^10",
            layer_name(&layers[k - 1]),
            top.log2()
        );
    }
    Ok(())
}

fn layer_name(l: &he_agg::infer::Layer) -> &'static str {
    use he_agg::infer::Layer::*;
    match l {
        Conv2d(_) => "conv",
        Dense(_) => "dense",
        Residual(_) => "residual",
        GlobalAvgPool => "global-avg-pool",
        ChannelQuadratic { .. } => "quadratic",
        Square => "square",
        _ => "other",
    }
}
