//! Runs one kernel's forward NTT in a loop, for a profiler or an instruction count under an
//! emulator (`scripts/aarch64.sh --count`):
//! `cargo run --release -p he-agg --example profile_ntt -- FloatAvx2 14 40 20000`.

use he_agg::ring::ntt::{Kernel, NttPlan};
use he_agg::ring::primes::generate_primes;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let kernels = [
        Kernel::Tfhe,
        Kernel::Shoup,
        Kernel::ShoupMulx,
        Kernel::LanesAvx2,
        Kernel::LanesAvx512,
        Kernel::FloatAvx2,
        Kernel::FloatAvx512,
        Kernel::FloatNeon,
    ];
    let name = args.get(1).map(String::as_str).unwrap_or("FloatAvx2");
    let Some(&kernel) = kernels.iter().find(|k| format!("{k:?}") == name) else {
        eprintln!("unknown kernel {name}: one of {kernels:?}");
        std::process::exit(2);
    };
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let n = 1usize << arg(2, 14);
    let p = generate_primes(arg(3, 40) as u32, n, 1, &[]).expect("a prime")[0];
    let plan = NttPlan::new(n, p).expect("plan");
    let mut buf: Vec<u64> = (0..n as u64).map(|i| (i * 0x9e37_79b9) % p).collect();
    for _ in 0..arg(4, 20000) {
        plan.fwd_with(kernel, &mut buf);
    }
    println!("{}", buf[0]);
}
