//! What `bench_infer`'s sections report alike: a result against the plain forward pass, this
//! process's CPU time, a parameter set.

use serde_json::{Value, json};

pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}

/// Largest |encrypted − plain| and whether the argmax agrees.
pub fn compare(got: &[f64], want: &[f32]) -> (f64, bool) {
    let err = got
        .iter()
        .zip(want)
        .map(|(g, w)| (g - *w as f64).abs())
        .fold(0.0, f64::max);
    let w64: Vec<f64> = want.iter().map(|&w| w as f64).collect();
    (err, argmax(got) == argmax(&w64))
}

/// CPU time of this process so far (all threads), from /proc (clock ticks of 10 ms): robust
/// to other processes sharing the cores, unlike wall time.
pub fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // fields 14 and 15 of the whole line: utime, stime (here 12 and 13 after pid and comm)
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

pub fn describe(params: &he_agg::ckks::Parameters) -> Value {
    let bits = |v: &[u64]| -> Vec<u32> { v.iter().map(|&q| 64 - q.leading_zeros()).collect() };
    json!({
        "N": params.n(), "q_bits": bits(params.rlwe().q()), "p_bits": bits(params.rlwe().p()),
        "dnum": params.rlwe().dnum(), "log_scale": params.log_scale(),
        "log_qp": params.rlwe().log_qp(),
    })
}
