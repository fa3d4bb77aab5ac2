//! Loads a torchvision ResNet state dict (`torch.save` file) into HEAL's network and compares
//! its logits with PyTorch's (`scripts/torchvision-check.sh` makes both files):
//! `torchvision_check MODEL.pth REFERENCE.json`. Exits 1 when the largest difference exceeds
//! 1e-4 of the largest logit.

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use training::model::{HeadInit, InitConfig, WeightsLayout};
use training::transfer::{load_init, torchvision_resnet};

#[derive(serde::Deserialize)]
struct Reference {
    blocks: Vec<usize>,
    side: usize,
    classes: usize,
    torch: String,
    torchvision: String,
    inputs: Vec<f32>,
    logits: Vec<f32>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, reference] = &args[..] else {
        return Err("usage: torchvision_check MODEL.pth REFERENCE.json".into());
    };
    let r: Reference = serde_json::from_str(&std::fs::read_to_string(reference)?)?;
    let spec = torchvision_resnet(&r.blocks).resolve([3, r.side, r.side], r.classes)?;
    let init = InitConfig {
        path: PathBuf::from(model),
        layout: WeightsLayout::Torchvision,
        head: HeadInit::Keep,
        freeze: 0,
        layers: None,
        blake3: None,
    };
    let device = Device::flex();
    let (net, report) = load_init(&spec, &init, std::path::Path::new("."), &device)?;
    let n = r.inputs.len() / (3 * r.side * r.side);
    let x = Tensor::<4>::from_data(TensorData::new(r.inputs, [n, 3, r.side, r.side]), &device);
    let got: Vec<f32> = net
        .forward(x)
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| format!("{e:?}"))?;
    let scale = r.logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(&r.logits)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    let rel = err / scale.max(1e-30);
    println!(
        "{model}: {} tensors loaded ({} values); {n} images, {} logits each: largest |HEAL − PyTorch {} / torchvision {}| = {err:.3e}, {rel:.3e} of the largest logit ({scale:.3}) — {}",
        report.loaded,
        report.loaded_values,
        r.classes,
        r.torch,
        r.torchvision,
        if rel <= 1e-4 {
            "within 1e-4"
        } else {
            "ABOVE 1e-4"
        }
    );
    if rel > 1e-4 {
        std::process::exit(1);
    }
    Ok(())
}
