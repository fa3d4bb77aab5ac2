//! How the GPU benchmarks end: the report written where asked, and the exit code a script reads
//! (0 when every result equals the CPU's or when there is no device, 1 otherwise).

use serde_json::{Value, json};

pub fn finish(
    name: &str,
    mut report: Value,
    outcome: Result<bool, String>,
    json_path: Option<String>,
) -> ! {
    let code = match outcome {
        Ok(true) => 0,
        Ok(false) => {
            println!("MISMATCH: a GPU result differs from the CPU's");
            1
        }
        Err(e) if e.contains("CUDA") || e.contains("NVRTC") || e.contains("device") => {
            println!("no CUDA device: {e}");
            report["reason"] = json!(e);
            0
        }
        Err(e) => {
            println!("failed: {e}");
            report["error"] = json!(e);
            1
        }
    };
    if let Some(path) = json_path {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("{name}: cannot write {path}: {e}");
        }
    }
    std::process::exit(code);
}
