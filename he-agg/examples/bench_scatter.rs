//! The scattering front's speed on one thread: images per second for the image sizes HEAL
//! trains on, as JSON on the last line. `cargo run --release -p he-agg --example bench_scatter`
//! (FFTs by rustfft, which picks AVX/SSE/NEON itself; HEAL_SIMD does not reach it).

use std::time::Instant;

use he_agg::infer::scatter::{Scatter, ScatterFront};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut out = serde_json::Map::new();
    for (image, images) in [([1, 28, 28], 2000), ([1, 64, 64], 300), ([1, 256, 256], 20)] {
        let front = ScatterFront {
            image,
            scales: 2,
            angles: 8,
            groups: 9,
        };
        let t = Instant::now();
        let s = Scatter::new(front)?;
        let setup = t.elapsed().as_secs_f64();
        let n = image.iter().product::<usize>();
        let x: Vec<f32> = (0..n).map(|i| ((i * 7919) % 255) as f32 / 255.0).collect();
        let t = Instant::now();
        let mut sink = 0f32;
        for _ in 0..images {
            sink += s.apply(&x)?[0];
        }
        let per = t.elapsed().as_secs_f64() / images as f64;
        let side = image[1];
        println!(
            "{side}×{side}: {:.3} ms an image ({:.0} images/s), filter bank {:.1} ms, output {:?} ({sink:.1})",
            per * 1e3,
            1.0 / per,
            setup * 1e3,
            front.output()
        );
        out.insert(format!("ms_per_image_{side}"), serde_json::json!(per * 1e3));
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
