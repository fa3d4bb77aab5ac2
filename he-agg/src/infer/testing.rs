//! Small networks with fixed weights, and keys for them, for tests, examples and demos across
//! the workspace (one definition instead of a copy per crate). Their weights have both signs,
//! so composed maps and encrypted evaluations are exercised for real; they are not trained.

use super::network::{Conv2d, Dense, Layer, Network};

/// Deterministic weights in [−s/2, s/2).
fn weights(n: usize, s: f32) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 37 + 11) % 23) as f32 / 23.0 - 0.5) * s)
        .collect()
}

/// conv 1→2 k3 on a 1×6×6 image → square → dense 32→3, normalised `(x − 0.5)/0.25`:
/// depth 3, three classes.
pub fn tiny_network() -> Network {
    Network::new(
        [1, 6, 6],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: 2,
                kernel: 3,
                stride: 1,
                padding: 0,
                weight: weights(18, 1.0),
                bias: vec![0.1, -0.2],
            }),
            Layer::Square,
            Layer::Flatten,
            Layer::Dense(Dense {
                in_features: 32,
                out_features: 3,
                weight: weights(96, 0.5),
                bias: vec![0.0, 0.1, -0.1],
            }),
        ],
    )
    .and_then(|n| n.with_normalization(vec![0.5], vec![0.25]))
    .unwrap_or_else(|e| unreachable!("a fixed valid network: {e}"))
}

/// The class names of [`tiny_network`].
pub fn tiny_class_names() -> Vec<String> {
    ["a", "b", "c"].iter().map(|s| s.to_string()).collect()
}

/// A clinical-family network in miniature: a patch embedding (kernel = stride = `patch`) on a
/// 1×`side`×`side` image to `channels`, square, a 2×2 patch merge to `channels`, square, dense to
/// `classes`. Its input spans several ciphertexts when `side`² exceeds the slots.
pub fn patch_network(side: usize, patch: usize, channels: usize, classes: usize) -> Network {
    let grid = side / patch;
    let merged = grid / 2;
    Network::new(
        [1, side, side],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: 1,
                out_channels: channels,
                kernel: patch,
                stride: patch,
                padding: 0,
                weight: weights(channels * patch * patch, 4.0 / patch as f32),
                bias: weights(channels, 0.2),
            }),
            Layer::Square,
            Layer::Conv2d(Conv2d {
                in_channels: channels,
                out_channels: channels,
                kernel: 2,
                stride: 2,
                padding: 0,
                weight: weights(channels * channels * 4, 1.0 / channels as f32),
                bias: weights(channels, 0.1),
            }),
            Layer::Square,
            Layer::Flatten,
            Layer::Dense(Dense {
                in_features: channels * merged * merged,
                out_features: classes,
                weight: weights(classes * channels * merged * merged, 0.5),
                bias: weights(classes, 0.2),
            }),
        ],
    )
    .and_then(|n| n.with_normalization(vec![0.4], vec![0.3]))
    .unwrap_or_else(|e| panic!("patch_network({side}, {patch}, {channels}, {classes}): {e}"))
}

/// The clinical network family (`configs/baseline-ct256.toml`) on `side`×`side` images of
/// `channels` channels, with deterministic He-scaled weights of both signs: a patch embedding
/// (kernel = stride = side/16) to 32 channels on a 16×16 grid, square, a 3×3 convolution
/// (32 → 32, zero padding), square, 2×2 average pooling, dense to `classes`. Depth 5 whatever
/// the side; only the first map grows with the image.
pub fn clinical_network(side: usize, channels: usize, classes: usize) -> Network {
    let patch = side / 16;
    let (c1, grid) = (32, 16);
    let signed = |n: usize, fan_in: usize, salt: usize| -> Vec<f32> {
        let s = (3.0 / fan_in as f32).sqrt();
        (0..n)
            .map(|i| (((i * 7919 + salt * 104_729 + 13) % 2003) as f32 / 1001.0 - 1.0) * s)
            .collect()
    };
    Network::new(
        [channels, side, side],
        vec![
            Layer::Conv2d(Conv2d {
                in_channels: channels,
                out_channels: c1,
                kernel: patch,
                stride: patch,
                padding: 0,
                weight: signed(c1 * channels * patch * patch, channels * patch * patch, 1),
                bias: weights(c1, 0.2),
            }),
            Layer::Square,
            Layer::Conv2d(Conv2d {
                in_channels: c1,
                out_channels: c1,
                kernel: 3,
                stride: 1,
                padding: 1,
                weight: signed(c1 * c1 * 9, c1 * 9, 2),
                bias: weights(c1, 0.2),
            }),
            Layer::Square,
            Layer::AvgPool2d {
                kernel: 2,
                stride: 2,
            },
            Layer::Flatten,
            Layer::Dense(Dense {
                in_features: c1 * (grid / 2) * (grid / 2),
                out_features: classes,
                weight: signed(classes * c1 * 64, c1 * 64, 3),
                bias: weights(classes, 0.2),
            }),
        ],
    )
    .and_then(|n| n.with_normalization(vec![0.45; channels], vec![0.25; channels]))
    .unwrap_or_else(|e| panic!("clinical_network({side}, {channels}, {classes}): {e}"))
}

/// A secret key and an evaluator holding exactly a plan's evaluation keys (mode b, one party).
pub struct TestKeys {
    pub ctx: std::sync::Arc<crate::ckks::CkksContext>,
    pub sk: crate::ckks::SecretKey,
    pub eval: crate::ckks::Evaluator,
}

/// Fresh keys for `spec` from the OS's randomness; panics only if the OS has none or the
/// spec's parameters are inconsistent (a bug in the plan).
pub fn keys_for(spec: &super::InferenceSpec) -> TestKeys {
    let ctx =
        crate::ckks::CkksContext::new(spec.parameters().clone()).expect("the plan's parameters");
    let mut kg = ctx.key_generator().expect("OS randomness");
    let sk = kg.secret_key();
    let keys = spec.generate_keys(&mut kg, &sk);
    let eval = ctx
        .evaluator(keys.relinearization.as_ref(), Some(&keys.galois))
        .expect("the plan's keys");
    TestKeys { ctx, sk, eval }
}

/// A small residual network of the ResNet family on `side`×`side` images of `channels`
/// channels, with deterministic weights of both signs and per-channel quadratics (a ≈ 0.1–0.3):
/// a 3×3 stem to `width` channels, then per stage `blocks` basic blocks (conv 3×3 →
/// quadratic → conv 3×3, plus the shortcut, → quadratic), the first block of each later stage
/// striding by 2 with a 1×1 projection and doubling the width, then global average pooling and
/// a dense layer to `classes`. Four levels per block.
pub fn residual_network(
    side: usize,
    channels: usize,
    width: usize,
    stages: usize,
    blocks: usize,
    classes: usize,
) -> Network {
    use super::network::Residual;
    let mut salt = 0usize;
    let mut signed = |n: usize, fan_in: usize| -> Vec<f32> {
        salt += 1;
        let s = (1.5 / fan_in as f32).sqrt();
        (0..n)
            .map(|i| (((i * 7919 + salt * 104_729 + 13) % 2003) as f32 / 1001.0 - 1.0) * s)
            .collect()
    };
    // zero-mean weights per output channel: a flat region of an image (a dark background)
    // stays small through the blocks instead of growing with every quadratic
    let mut conv = |ci: usize, co: usize, k: usize, stride: usize| -> Conv2d {
        let fan = ci * k * k;
        let mut weight = signed(co * fan, fan);
        for row in weight.chunks_mut(fan) {
            let mean = row.iter().sum::<f32>() / fan as f32;
            row.iter_mut().for_each(|w| *w -= mean);
        }
        Conv2d {
            in_channels: ci,
            out_channels: co,
            kernel: k,
            stride,
            padding: k / 2,
            weight,
            bias: weights(co, 0.1),
        }
    };
    let act = |c: usize, salt: usize| Layer::ChannelQuadratic {
        a: (0..c)
            .map(|i| 0.1 + 0.2 * (((i + salt) * 37 % 11) as f32 / 10.0))
            .collect(),
        b: (0..c)
            .map(|i| 0.5 + 0.1 * (((i + salt) * 13 % 7) as f32 / 6.0))
            .collect(),
        c: (0..c)
            .map(|i| 0.05 * (((i + salt) * 5 % 3) as f32 - 1.0))
            .collect(),
    };
    let mut layers = vec![Layer::Conv2d(conv(channels, width, 3, 1)), act(width, 0)];
    let mut w = width;
    for stage in 0..stages {
        for b in 0..blocks {
            let down = stage > 0 && b == 0;
            let (wi, wo, stride) = if down { (w, 2 * w, 2) } else { (w, w, 1) };
            let body = vec![
                Layer::Conv2d(conv(wi, wo, 3, stride)),
                act(wo, stage * 7 + b + 1),
                Layer::Conv2d(conv(wo, wo, 3, 1)),
            ];
            let shortcut = down.then(|| conv(wi, wo, 1, 2));
            layers.push(Layer::Residual(Residual { body, shortcut }));
            layers.push(act(wo, stage * 7 + b + 2));
            w = wo;
        }
    }
    layers.push(Layer::GlobalAvgPool);
    layers.push(Layer::Dense(Dense {
        in_features: w,
        out_features: classes,
        weight: signed(classes * w, w),
        bias: weights(classes, 0.2),
    }));
    Network::new([channels, side, side], layers)
        .and_then(|n| n.with_normalization(vec![0.45; channels], vec![0.25; channels]))
        .unwrap_or_else(|e| {
            panic!("residual_network({side}, {channels}, {width}, {stages}, {blocks}): {e}")
        })
}

/// A consortium of `hospitals` that made a plan's keys collectively (mode a) and holds t-of-N
/// threshold shares of the collective secret, all in one process (tests and benchmarks).
pub struct Consortium {
    pub ctx: std::sync::Arc<crate::ckks::CkksContext>,
    pub eval: crate::ckks::Evaluator,
    pub public_key: crate::ckks::PublicKey,
    pub crs: crate::multiparty::Crs,
    /// Each hospital's own secret: their sum is the collective secret, which only a test forms.
    pub secrets: Vec<crate::rlwe::SecretKey>,
    /// Hospital i + 1's threshold share.
    pub threshold: Vec<crate::multiparty::ThresholdSecret>,
}

/// Runs the collective key generation of `spec` among `hospitals` and deals `t`-of-N shares;
/// panics only without OS randomness or on a bug in the protocol.
pub fn consortium(spec: &super::InferenceSpec, hospitals: u32, t: usize) -> Consortium {
    use crate::multiparty::{Crs, ThresholdSecret, threshold::deal};
    let ctx =
        crate::ckks::CkksContext::new(spec.parameters().clone()).expect("the plan's parameters");
    let mut prng = crate::ring::Prng::from_os().expect("OS randomness");
    let crs = Crs::from_seed(prng.seed());
    let keys = super::threshold::CollectiveKeys::new(spec, &ctx, &crs).expect("the plan's keys");
    let ids: Vec<u32> = (1..=hospitals).collect();
    // round 1 summed as it comes (each hospital's shares are hundreds of MB at deep plans)
    let mut secrets = Vec::new();
    let mut ephemeral = Vec::new();
    let mut agg1: Option<super::threshold::KeyShares> = None;
    for _ in &ids {
        let sk = ctx.key_generator().expect("OS randomness").secret_key();
        let (eph, shares) = keys.round1(&sk, &mut prng).expect("round 1");
        match agg1.as_mut() {
            None => agg1 = Some(shares),
            Some(a) => keys.aggregate1(a, &shares).expect("round-1 sum"),
        }
        secrets.push(sk);
        ephemeral.push(eph);
    }
    let agg1 = agg1.expect("at least one hospital");
    let mut agg2 = None;
    for (sk, eph) in secrets.iter().zip(&ephemeral) {
        let s = keys
            .round2(eph, sk, &agg1.relinearization, &mut prng)
            .expect("round 2");
        match agg2.as_mut() {
            None => agg2 = Some(s),
            Some(a) => keys.aggregate2(a, &s).expect("round-2 sum"),
        }
    }
    let public_key = keys.public_key(&agg1);
    let eval_keys = keys
        .finalize(agg1, agg2.expect("round-2 shares"))
        .expect("evaluation keys");
    let eval = ctx
        .evaluator(eval_keys.relinearization.as_ref(), Some(&eval_keys.galois))
        .expect("the plan's keys");
    let dealt: Vec<_> = ids
        .iter()
        .zip(&secrets)
        .map(|(&i, sk)| deal(&ctx, sk, i, &ids, t, &mut prng).expect("deal"))
        .collect();
    let threshold = ids
        .iter()
        .map(|&me| {
            let mine: Vec<_> = dealt
                .iter()
                .flatten()
                .filter(|s| s.to() == me)
                .cloned()
                .collect();
            ThresholdSecret::combine(&ctx, me, t, &ids, &mine).expect("combine")
        })
        .collect();
    Consortium {
        ctx,
        eval,
        public_key,
        crs,
        secrets,
        threshold,
    }
}

impl Consortium {
    /// The additive shares of the collective secret of the hospitals `active` (t of them).
    pub fn additive(&self, active: &[u32]) -> Vec<crate::rlwe::SecretKey> {
        active
            .iter()
            .map(|&i| {
                self.threshold[(i - 1) as usize]
                    .additive_share(&self.ctx, active)
                    .expect("an active hospital's share")
            })
            .collect()
    }

    /// The collective secret (no party ever holds it: tests only).
    pub fn collective_secret(&self) -> crate::rlwe::SecretKey {
        crate::multiparty::sum_of_secrets(&self.ctx, &self.secrets)
    }

    /// Refreshes `ct` among the keyholders whose additive shares are `shares`, as each of them
    /// does over the network (every share, then the sum finalized).
    pub fn refresh(
        &self,
        refresh: &crate::multiparty::Refresh,
        shares: &[crate::rlwe::SecretKey],
        ct: &crate::ckks::Ciphertext,
        prng: &mut crate::ring::Prng,
    ) -> Result<crate::ckks::Ciphertext, crate::multiparty::MultipartyError> {
        let mut acc: Option<crate::multiparty::RefreshShare> = None;
        for sk in shares {
            let share = refresh.share(sk, ct, prng)?;
            match acc.as_mut() {
                None => acc = Some(share),
                Some(a) => refresh.aggregate(a, &share)?,
            }
        }
        let acc = acc.ok_or(crate::multiparty::MultipartyError::TooFewParties {
            got: 0,
            threshold: 1,
        })?;
        refresh.finalize(ct, &acc)
    }

    /// `ct` switched to `target` by the keyholders whose additive shares are `shares` (each
    /// share made, then the sum finalized, as over the network).
    pub fn switch(
        &self,
        pcks: &crate::multiparty::PublicKeySwitch,
        shares: &[crate::rlwe::SecretKey],
        target: &crate::ckks::PublicKey,
        ct: &crate::ckks::Ciphertext,
        prng: &mut crate::ring::Prng,
    ) -> Result<crate::ckks::Ciphertext, crate::multiparty::MultipartyError> {
        let mut acc = None;
        for sk in shares {
            let share = pcks.share(sk, target, ct, prng)?;
            match acc.as_mut() {
                None => acc = Some(share),
                Some(a) => pcks.aggregate(a, &share)?,
            }
        }
        let acc = acc.ok_or(crate::multiparty::MultipartyError::TooFewParties {
            got: 0,
            threshold: 1,
        })?;
        pcks.finalize(ct, acc)
    }
}
