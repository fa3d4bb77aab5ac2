//! The networks the inference benchmarks share: the default OrganAMNIST architecture with
//! random weights, and normalised random images.

#![allow(dead_code)]

use he_agg::infer::{Conv2d, Dense, Layer, Network};

/// splitmix64 uniform values in [-1, 1).
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
        z ^= z >> 31;
        ((z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32
    }
    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

pub fn conv(rng: &mut Rng, ci: usize, co: usize, k: usize, s: usize, w: f32, b: f32) -> Layer {
    Layer::Conv2d(Conv2d {
        in_channels: ci,
        out_channels: co,
        kernel: k,
        stride: s,
        padding: 0,
        weight: rng.vec(co * ci * k * k, w),
        bias: rng.vec(co, b),
    })
}

pub fn dense(rng: &mut Rng, i: usize, o: usize, w: f32, b: f32) -> Layer {
    Layer::Dense(Dense {
        in_features: i,
        out_features: o,
        weight: rng.vec(i * o, w),
        bias: rng.vec(o, b),
    })
}

/// The default architecture with He-like random weights (no trained model given).
pub fn default_network() -> Network {
    let rng = &mut Rng(2024);
    Network::new(
        [1, 28, 28],
        vec![
            conv(rng, 1, 16, 5, 2, 1.0 / 5.0, 0.1),
            Layer::Square,
            dense(rng, 2304, 128, 1.0 / 48.0, 0.1),
            Layer::Square,
            dense(rng, 128, 11, 1.0 / 11.3, 0.1),
        ],
    )
    .expect("the default architecture is valid")
    .with_normalization(vec![0.5], vec![0.5])
    .expect("one channel")
}

/// Normalised random images (uniform pixels).
pub fn images(net: &Network, count: usize, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = Rng(seed);
    (0..count)
        .map(|_| {
            let px: Vec<u8> = (0..net.image_input().iter().product::<usize>())
                .map(|_| ((rng.next() + 1.0) * 127.5) as u8)
                .collect();
            // normalize_hwc reads HWC; with random pixels the order does not matter
            net.normalize_hwc(&px).expect("sized for the network")
        })
        .collect()
}

/// Images of the data's scale: pixels near the normalisation's mean (random noise over the
/// whole range is far outside any training data, and a deep polynomial network's values grow
/// without bound on it).
pub fn images_near_mean(net: &Network, count: usize, seed: u64) -> Vec<Vec<f32>> {
    let [c, h, w] = net.image_input();
    let mean = net.normalization().map_or(vec![0.5; c], |n| n.mean.clone());
    let mut s = seed;
    (0..count)
        .map(|_| {
            let px: Vec<u8> = (0..c * h * w)
                .map(|i| {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let noise = (s >> 58) as f32 - 32.0;
                    (mean[i % c] * 255.0 + noise).clamp(0.0, 255.0) as u8
                })
                .collect();
            net.normalize_hwc(&px).expect("sized for the network")
        })
        .collect()
}
