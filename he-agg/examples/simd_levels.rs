//! Prints the SIMD levels this CPU can run, lowest first, one per line (for `HEAL_SIMD` loops in
//! CI and benchmarks): `cargo run -q -p he-agg --example simd_levels`.

fn main() {
    for l in he_agg::simd::Level::supported() {
        println!("{l}");
    }
}
