//! The compute device a model trains on, chosen by name in a config or on the command line:
//! burn's flex backend on the CPU, or a GPU through burn's CUDA or wgpu backend where the build
//! has it.

use burn::tensor::Device;

use crate::error::TrainError;

/// A device name's form checked without loading it: "cpu", "flex", "cuda[:N]" or "wgpu[:N]",
/// the GPU ones only in builds with their feature. A config states this before any round runs.
pub fn check_device_name(name: &str) -> Result<(), TrainError> {
    let s = name.to_ascii_lowercase();
    let gpu = |kind: &str, built: bool| -> Result<(), TrainError> {
        if let Some(i) = s.strip_prefix(kind).and_then(|r| r.strip_prefix(':')) {
            i.parse::<usize>()
                .map_err(|e| TrainError::Device(name.into(), format!("index {i:?}: {e}")))?;
        }
        if built {
            Ok(())
        } else {
            Err(TrainError::Device(
                name.into(),
                format!("this build has no {kind} backend (rebuild with `--features {kind}`)"),
            ))
        }
    };
    match s.as_str() {
        "cpu" | "flex" => Ok(()),
        d if d == "cuda" || d.starts_with("cuda:") => gpu("cuda", cfg!(feature = "cuda")),
        d if d == "wgpu" || d.starts_with("wgpu:") => gpu("wgpu", cfg!(feature = "wgpu")),
        _ => Err(TrainError::Device(
            name.into(),
            "known devices: cpu, cuda[:N], wgpu[:N]".into(),
        )),
    }
}

/// The compute device for training: `"cpu"` (burn's flex backend, all cores) or, in builds
/// with the `cuda` feature, `"cuda"`/`"cuda:N"`, with `wgpu`, `"wgpu"`/`"wgpu:N"` (the N-th
/// discrete GPU through Vulkan). The returned device has autodiff enabled.
pub fn select_device(name: &str) -> Result<Device, TrainError> {
    check_device_name(name)?;
    let s = name.to_ascii_lowercase();
    // checked above: a GPU name's index parses, and its backend is built in
    #[cfg(any(feature = "cuda", feature = "wgpu"))]
    let index = s.split_once(':').map_or(0, |(_, i)| i.parse().unwrap_or(0));
    match s.split(':').next() {
        #[cfg(feature = "cuda")]
        Some("cuda") => Ok(Device::cuda(index).autodiff()),
        #[cfg(feature = "wgpu")]
        Some("wgpu") => Ok(Device::wgpu(burn::tensor::DeviceKind::DiscreteGpu(index)).autodiff()),
        _ => Ok(Device::flex().autodiff()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert!(select_device("cpu").unwrap().is_autodiff());
        assert!(matches!(select_device("tpu"), Err(TrainError::Device(..))));
        for ok in ["cpu", "CPU", "flex"] {
            check_device_name(ok).unwrap();
        }
        for bad in ["cuda:x", "wgpu:-1", "cpu:0", "cudas", ""] {
            let e = check_device_name(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        // a GPU name is accepted exactly where its backend is built in
        for (name, built) in [
            ("cuda:1", cfg!(feature = "cuda")),
            ("wgpu", cfg!(feature = "wgpu")),
        ] {
            let r = check_device_name(name);
            assert_eq!(r.is_ok(), built, "{name}: {r:?}");
            if !built {
                assert!(r.unwrap_err().to_string().contains("--features"));
            }
        }
    }
}
