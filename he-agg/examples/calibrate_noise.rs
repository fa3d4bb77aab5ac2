//! Mode (a)'s flooding, sized: the parameters a served network gets, the noise its results carry
//! (measured by `he_agg::infer::calibrate`), the flooding 2^λ above it and what that leaves in
//! the logits.
//!
//! ```sh
//! cargo run --release -p he-agg --features serde --example calibrate_noise -- NETWORK.json [HOSPITALS [SCALE_BITS]]
//! ```

use std::time::Instant;

use he_agg::ckks::CkksContext;
use he_agg::infer::calibrate::{MARGIN_BITS, Weights, calibrate_result_noise};
use he_agg::infer::threshold::{RESULT_LAMBDA, served_flooding, served_policy};
use he_agg::infer::{InferencePlan, NetworkFile};

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: calibrate_noise NETWORK.json [HOSPITALS [SCALE_BITS]]");
    let hospitals: usize = args.next().map_or(5, |h| h.parse().expect("hospitals"));
    let text = std::fs::read_to_string(&path).expect("read the network");
    let net = NetworkFile::from_json(&text, std::path::Path::new(&path))
        .expect("a heal-network/1 file")
        .network;
    let mut policy = served_policy();
    if let Some(bits) = args.next() {
        // a scale to try instead of the served policy's (bits per rescale)
        let bits: u32 = bits.parse().expect("scale bits");
        policy.min_scale_bits = bits;
        policy.max_scale_bits = bits;
    }
    let plan = InferencePlan::new(&net, &policy).expect("mode (a) plan");
    let spec = plan.spec();
    let p = spec.parameters();
    let q = p.rlwe().q();
    let bits: Vec<u32> = q
        .iter()
        .map(|&x| (x as f64).log2().round() as u32)
        .collect();
    println!(
        "N = 2^{}, scale 2^{}, {} primes per rescale, q bits {bits:?}, log2 QP {:.0}, depth {}, \
         input level {}, output level {}",
        p.n().trailing_zeros(),
        p.log_scale(),
        spec.step_primes(),
        p.rlwe().log_qp(),
        spec.depth(),
        spec.input_level(),
        spec.output_level()
    );
    let t0 = Instant::now();
    let cal = calibrate_result_noise(
        &std::sync::Arc::new(plan.clone()),
        &net,
        hospitals,
        Weights::Plain,
    )
    .expect("calibration");
    println!(
        "calibration with {hospitals} parties: {:.1} s; largest noise coefficient 2^{:.1} \
         (2^{:.1} per slot, relative to the scale), bound 2^{:.1} (+{MARGIN_BITS} bits)",
        t0.elapsed().as_secs_f64(),
        cal.measured.log2(),
        cal.relative_slot_noise.log2(),
        cal.bound.log2()
    );
    let ctx = CkksContext::new(p.clone()).expect("context");
    let t = hospitals.div_ceil(2).max(2).min(hospitals);
    match served_flooding(&ctx, spec, cal.bound, hospitals, t) {
        Ok((flooding, slot_error)) => println!(
            "flooding σ = 2^{:.1} (λ = {RESULT_LAMBDA} over the bound, 2^{:.1} over the noise \
             measured), expected switching error per logit {slot_error:.2e} with {t} switchers",
            flooding.sigma().log2(),
            (flooding.sigma() / cal.measured).log2()
        ),
        Err(e) => println!("refused: {e}"),
    }
}
