//! torchvision's ResNet (BasicBlock) forward pass in evaluation mode, written from its
//! definition with plain loops over a state dict: the independent evaluation that HEAL's loaded
//! network is checked against. Also makes a random state dict in torchvision's names.

use std::collections::BTreeMap;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

/// name → (shape, values)
pub type StateDict = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// One image `[c, h, w]`.
#[derive(Clone)]
pub struct Map {
    pub c: usize,
    pub h: usize,
    pub w: usize,
    pub v: Vec<f32>,
}

fn conv(x: &Map, w: &(Vec<usize>, Vec<f32>), stride: usize, pad: usize) -> Map {
    let (o, ci, k) = (w.0[0], w.0[1], w.0[2]);
    assert_eq!(ci, x.c);
    let oh = (x.h + 2 * pad - k) / stride + 1;
    let ow = (x.w + 2 * pad - k) / stride + 1;
    let mut out = vec![0f32; o * oh * ow];
    for oc in 0..o {
        for y in 0..oh {
            for xx in 0..ow {
                let mut acc = 0f64;
                for c in 0..ci {
                    for ky in 0..k {
                        let iy = (y * stride + ky) as isize - pad as isize;
                        if iy < 0 || iy >= x.h as isize {
                            continue;
                        }
                        for kx in 0..k {
                            let ix = (xx * stride + kx) as isize - pad as isize;
                            if ix < 0 || ix >= x.w as isize {
                                continue;
                            }
                            let wv = w.1[((oc * ci + c) * k + ky) * k + kx];
                            acc += f64::from(wv)
                                * f64::from(x.v[(c * x.h + iy as usize) * x.w + ix as usize]);
                        }
                    }
                }
                out[(oc * oh + y) * ow + xx] = acc as f32;
            }
        }
    }
    Map {
        c: o,
        h: oh,
        w: ow,
        v: out,
    }
}

fn bn(x: &mut Map, sd: &StateDict, p: &str) {
    let g = &sd[&format!("{p}.weight")].1;
    let b = &sd[&format!("{p}.bias")].1;
    let m = &sd[&format!("{p}.running_mean")].1;
    let var = &sd[&format!("{p}.running_var")].1;
    let hw = x.h * x.w;
    for c in 0..x.c {
        let s = g[c] / (var[c] + 1e-5).sqrt();
        for v in &mut x.v[c * hw..(c + 1) * hw] {
            *v = (*v - m[c]) * s + b[c];
        }
    }
}

fn relu(x: &mut Map) {
    x.v.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn max_pool(x: &Map, k: usize, s: usize, pad: usize) -> Map {
    let oh = (x.h + 2 * pad - k) / s + 1;
    let ow = (x.w + 2 * pad - k) / s + 1;
    let mut v = vec![f32::NEG_INFINITY; x.c * oh * ow];
    for c in 0..x.c {
        for y in 0..oh {
            for xx in 0..ow {
                for ky in 0..k {
                    for kx in 0..k {
                        let iy = (y * s + ky) as isize - pad as isize;
                        let ix = (xx * s + kx) as isize - pad as isize;
                        if iy >= 0 && ix >= 0 && (iy as usize) < x.h && (ix as usize) < x.w {
                            let o = &mut v[(c * oh + y) * ow + xx];
                            *o = o.max(x.v[(c * x.h + iy as usize) * x.w + ix as usize]);
                        }
                    }
                }
            }
        }
    }
    Map {
        c: x.c,
        h: oh,
        w: ow,
        v,
    }
}

/// Logits of a torchvision ResNet with BasicBlocks, `blocks` per stage.
pub fn forward(sd: &StateDict, blocks: &[usize], image: &Map) -> Vec<f32> {
    let mut x = conv(image, &sd["conv1.weight"], 2, 3);
    bn(&mut x, sd, "bn1");
    relu(&mut x);
    let mut x = max_pool(&x, 3, 2, 1);
    for (s, &n) in blocks.iter().enumerate() {
        for b in 0..n {
            let p = format!("layer{}.{b}", s + 1);
            let stride = if s > 0 && b == 0 { 2 } else { 1 };
            let mut h = conv(&x, &sd[&format!("{p}.conv1.weight")], stride, 1);
            bn(&mut h, sd, &format!("{p}.bn1"));
            relu(&mut h);
            let mut h = conv(&h, &sd[&format!("{p}.conv2.weight")], 1, 1);
            bn(&mut h, sd, &format!("{p}.bn2"));
            let short = match sd.get(&format!("{p}.downsample.0.weight")) {
                Some(w) => {
                    let mut d = conv(&x, w, stride, 0);
                    bn(&mut d, sd, &format!("{p}.downsample.1"));
                    d
                }
                None => x.clone(),
            };
            for (a, b) in h.v.iter_mut().zip(&short.v) {
                *a += b;
            }
            relu(&mut h);
            x = h;
        }
    }
    let hw = (x.h * x.w) as f32;
    let pooled: Vec<f32> = (0..x.c)
        .map(|c| x.v[c * x.h * x.w..(c + 1) * x.h * x.w].iter().sum::<f32>() / hw)
        .collect();
    let (w, b) = (&sd["fc.weight"], &sd["fc.bias"].1);
    (0..w.0[0])
        .map(|o| {
            b[o] + (0..w.0[1])
                .map(|i| w.1[o * w.0[1] + i] * pooled[i])
                .sum::<f32>()
        })
        .collect()
}

/// A random torchvision ResNet state dict (He-scaled weights, batch norms with statistics far
/// from the identity, so that every tensor matters), 3 input channels.
pub fn random(blocks: &[usize], classes: usize, seed: u64) -> StateDict {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut sd = StateDict::new();
    let put = |sd: &mut StateDict,
               rng: &mut ChaCha8Rng,
               name: String,
               shape: Vec<usize>,
               lo: f32,
               hi: f32| {
        let n = shape.iter().product();
        let v = (0..n).map(|_| rng.random_range(lo..hi)).collect();
        sd.insert(name, (shape, v));
    };
    let conv_w =
        |sd: &mut StateDict, rng: &mut ChaCha8Rng, name: String, o: usize, i: usize, k: usize| {
            let bound = (6.0 / (i * k * k) as f32).sqrt();
            put(sd, rng, name, vec![o, i, k, k], -bound, bound);
        };
    let norm = |sd: &mut StateDict, rng: &mut ChaCha8Rng, p: &str, c: usize| {
        for (t, lo, hi) in [
            ("weight", 0.5, 1.5),
            ("bias", -0.2, 0.2),
            ("running_mean", -0.3, 0.3),
            ("running_var", 0.5, 2.0),
        ] {
            let v = (0..c).map(|_| rng.random_range(lo..hi)).collect();
            sd.insert(format!("{p}.{t}"), (vec![c], v));
        }
    };
    conv_w(&mut sd, &mut rng, "conv1.weight".into(), 64, 3, 7);
    norm(&mut sd, &mut rng, "bn1", 64);
    let mut cin = 64;
    for (s, &n) in blocks.iter().enumerate() {
        let c = 64 << s;
        for b in 0..n {
            let p = format!("layer{}.{b}", s + 1);
            conv_w(&mut sd, &mut rng, format!("{p}.conv1.weight"), c, cin, 3);
            norm(&mut sd, &mut rng, &format!("{p}.bn1"), c);
            conv_w(&mut sd, &mut rng, format!("{p}.conv2.weight"), c, c, 3);
            norm(&mut sd, &mut rng, &format!("{p}.bn2"), c);
            if b == 0 && s > 0 {
                conv_w(
                    &mut sd,
                    &mut rng,
                    format!("{p}.downsample.0.weight"),
                    c,
                    cin,
                    1,
                );
                norm(&mut sd, &mut rng, &format!("{p}.downsample.1"), c);
            }
            cin = c;
        }
    }
    let bound = 1.0 / (cin as f32).sqrt();
    let fc: Vec<f32> = (0..classes * cin)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    sd.insert("fc.weight".into(), (vec![classes, cin], fc));
    let fb: Vec<f32> = (0..classes)
        .map(|_| rng.random_range(-bound..bound))
        .collect();
    sd.insert("fc.bias".into(), (vec![classes], fb));
    sd
}
