//! Microseconds per forward + inverse NTT of one limb, for every kernel this CPU runs, at the
//! ring degrees and prime sizes HEAL uses: `cargo run --release -p he-agg --example micro_ntt`.

use std::time::Instant;

use he_agg::ring::ntt::NttPlan;
use he_agg::ring::primes::generate_primes;
use he_agg::simd::Level;

fn main() {
    let best = Level::detected();
    println!("CPU level {best}; µs per forward / inverse NTT (median of 7 × 100)");
    for n in [1usize << 13, 1 << 14] {
        for bits in [40u32, 50, 51, 60, 61] {
            let p = generate_primes(bits, n, 1, &[]).expect("a prime")[0];
            let plan = NttPlan::new(n, p).expect("plan");
            let mut row = format!("N=2^{:<2} {bits}-bit:", n.trailing_zeros());
            for k in plan.kernels() {
                let mut buf: Vec<u64> = (0..n as u64).map(|i| (i * 0x9e37_79b9) % p).collect();
                let (mut fwd, mut inv) = (Vec::new(), Vec::new());
                for _ in 0..7 {
                    let t = Instant::now();
                    for _ in 0..100 {
                        plan.fwd_with(k, &mut buf);
                    }
                    fwd.push(t.elapsed().as_secs_f64() / 100.0 * 1e6);
                    let t = Instant::now();
                    for _ in 0..100 {
                        plan.inv_with(k, &mut buf);
                    }
                    inv.push(t.elapsed().as_secs_f64() / 100.0 * 1e6);
                }
                fwd.sort_by(f64::total_cmp);
                inv.sort_by(f64::total_cmp);
                row += &format!(" {k:?} {:.0}/{:.0}", fwd[3], inv[3]);
            }
            println!("{row}");
        }
    }
}
