use super::*;

fn front(image: [usize; 3], scales: usize, angles: usize, groups: usize) -> ScatterFront {
    ScatterFront {
        image,
        scales,
        angles,
        groups,
    }
}

/// Inverse DFT of a real spectrum, term by term (no FFT): the filter in space.
fn spatial(spec: &[f32], m: usize, n: usize) -> Vec<Complex<f64>> {
    let mut out = vec![Complex::new(0.0, 0.0); m * n];
    for (p, o) in out.iter_mut().enumerate() {
        let (x, y) = (p / n, p % n);
        for (k, &s) in spec.iter().enumerate() {
            let (u, v) = (k / n, k % n);
            let ph = 2.0
                * std::f64::consts::PI
                * ((u * x) as f64 / m as f64 + (v * y) as f64 / n as f64);
            *o += Complex::from_polar(f64::from(s), ph);
        }
        *o /= (m * n) as f64;
    }
    out
}

/// Circular convolution on an `m × n` grid, term by term.
fn convolve(x: &[Complex<f64>], f: &[Complex<f64>], m: usize, n: usize) -> Vec<Complex<f64>> {
    let mut out = vec![Complex::new(0.0, 0.0); m * n];
    for (p, o) in out.iter_mut().enumerate() {
        let (a, b) = (p / n, p % n);
        for (q, xv) in x.iter().enumerate() {
            let (c, d) = (q / n, q % n);
            *o += xv * f[((a + m - c) % m) * n + (b + n - d) % n];
        }
    }
    out
}

#[test]
fn shapes_follow_kymatio() {
    let f = front([1, 28, 28], 2, 8, 9);
    assert_eq!(f.maps_per_channel(), 81);
    assert_eq!(f.output(), [81, 7, 7]);
    assert_eq!(f.pad(), 12);
    assert_eq!(front([3, 30, 29], 2, 8, 27).output(), [243, 8, 8]);
    assert_eq!(
        front([1, 64, 64], 3, 6, 1).maps_per_channel(),
        1 + 18 + 36 * 3
    );
    let s = Scatter::new(f).unwrap();
    let x: Vec<f32> = (0..784).map(|i| ((i * 37) % 255) as f32 / 255.0).collect();
    let y = s.apply(&x).unwrap();
    assert_eq!(y.len(), 81 * 49);
    assert!(y.iter().all(|v| v.is_finite()));
}

#[test]
fn first_orders_match_a_direct_convolution() {
    // a 12 × 12 image, J = 1: grid 24 × 24 with 6 pixels of padding, outputs every 2 pixels
    let f = front([1, 12, 12], 1, 4, 1);
    let s = Scatter::new(f).unwrap();
    assert_eq!((s.grid, s.pad), ([24, 24], 6));
    let x: Vec<f32> = (0..144)
        .map(|i| ((i * 7919 % 101) as f32 / 101.0) - 0.3)
        .collect();
    let mut ours = vec![0f32; f.maps_per_channel() * 36];
    s.channel(&x, &mut ours);

    let (m, pad) = (24, 6);
    let padded: Vec<Complex<f64>> = reflect_pad(&x, 12, 12, pad, [m, m])
        .iter()
        .map(|&v| Complex::new(f64::from(v), 0.0))
        .collect();
    let phi = spatial(&s.bank.phi[0], m, m);
    let sample = |y: &[Complex<f64>]| -> Vec<f64> {
        (0..6)
            .flat_map(|i| (0..6).map(move |j| (i, j)))
            .map(|(i, j)| y[(pad + 2 * i) * m + pad + 2 * j].re)
            .collect()
    };
    let mut expected = sample(&convolve(&padded, &phi, m, m));
    for t in 0..4 {
        let psi = spatial(&s.bank.psi[0][t][0], m, m);
        let u: Vec<Complex<f64>> = convolve(&padded, &psi, m, m)
            .iter()
            .map(|v| Complex::new(v.norm(), 0.0))
            .collect();
        expected.extend(sample(&convolve(&u, &phi, m, m)));
    }
    let scale = expected.iter().fold(0f64, |a, v| a.max(v.abs()));
    for (k, (a, b)) in ours.iter().zip(&expected).enumerate() {
        assert!(
            (f64::from(*a) - b).abs() < 1e-4 * scale,
            "coefficient {k}: {a} vs {b}"
        );
    }
}

#[test]
fn a_constant_image_has_only_its_mean() {
    let f = front([1, 28, 28], 2, 8, 1);
    let s = Scatter::new(f).unwrap();
    let mut out = vec![0f32; 81 * 49];
    s.channel(&[0.7; 784], &mut out);
    assert!(
        out[..49].iter().all(|v| (v - 0.7).abs() < 1e-4),
        "{:?}",
        &out[..49]
    );
    assert!(out[49..].iter().all(|v| v.abs() < 1e-4));
}

#[test]
fn a_shift_by_the_sampling_step_shifts_the_maps() {
    // a blob away from the borders, then moved 4 pixels down and right (2^J = 4)
    let f = front([1, 28, 28], 2, 8, 9);
    let s = Scatter::new(f).unwrap();
    let blob = |ci: f32, cj: f32| -> Vec<f32> {
        (0..784)
            .map(|p| {
                let (i, j) = ((p / 28) as f32, (p % 28) as f32);
                (-((i - ci).powi(2) + 2.0 * (j - cj).powi(2)) / 6.0).exp()
            })
            .collect()
    };
    let (mut a, mut b) = (vec![0f32; 81 * 49], vec![0f32; 81 * 49]);
    s.channel(&blob(11.0, 11.0), &mut a);
    s.channel(&blob(15.0, 15.0), &mut b);
    for k in 0..81 {
        for i in 1..5 {
            for j in 1..5 {
                let (va, vb) = (a[k * 49 + i * 7 + j], b[k * 49 + (i + 1) * 7 + j + 1]);
                assert!(
                    (va - vb).abs() < 1e-3 * (1.0 + va.abs()),
                    "map {k} ({i},{j}): {va} vs {vb}"
                );
            }
        }
    }
}

#[test]
fn features_are_normalised_per_example_and_ignore_contrast() {
    let f = front([1, 28, 28], 2, 8, 9);
    let s = Scatter::new(f).unwrap();
    // an organ-like image: smooth texture and an edge
    let x: Vec<f32> = (0..784)
        .map(|p| {
            let (i, j) = ((p / 28) as f32, (p % 28) as f32);
            0.4 + 0.3 * (i / 3.0).sin() * (j / 5.0).cos() + if i + j > 30.0 { 0.3 } else { 0.0 }
        })
        .collect();
    let y = s.apply(&x).unwrap();
    // unit variance up to the floor on the deviation (order-2 groups of a smooth image
    // have deviations of a few 1e-4)
    for g in y.chunks(9 * 49) {
        let mean = g.iter().sum::<f32>() / g.len() as f32;
        let var = g.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / g.len() as f32;
        assert!(mean.abs() < 1e-4 && var <= 1.0 && var > 0.9, "{mean} {var}");
    }
    // twice the contrast gives the same features (up to the floor)
    let scaled: Vec<f32> = x.iter().map(|v| 2.0 * v).collect();
    let z = s.apply(&scaled).unwrap();
    assert!(
        y.iter()
            .zip(&z)
            .all(|(a, b)| (a - b).abs() < 0.02 * (1.0 + a.abs()))
    );
}

#[test]
fn bad_settings_are_refused_with_their_value() {
    for (f, what) in [
        (front([1, 28, 28], 0, 8, 1), "scales"),
        (front([1, 28, 28], 5, 8, 1), "scales"),
        (front([1, 28, 28], 2, 0, 1), "angles"),
        (front([1, 28, 28], 2, 8, 10), "groups"),
        (front([1, 28, 28], 2, 8, 0), "groups"),
        (front([1, 16, 28], 2, 8, 9), "image side"),
        (front([1, 28, 28], 4, 8, 1), "image side"),
        (front([1, 600, 28], 2, 8, 9), "image size"),
        (front([16, 512, 512], 2, 8, 9), "maps × padded pixels"),
        (front([1, 512, 512], 4, 16, 1), "maps × padded pixels"),
    ] {
        let e = Scatter::new(f).unwrap_err().to_string();
        assert!(e.contains(what), "{f:?}: {e}");
    }
    let s = Scatter::new(front([1, 28, 28], 2, 8, 9)).unwrap();
    assert!(matches!(
        s.apply(&[0.0; 783]),
        Err(NetworkError::InputLen {
            expected: 784,
            found: 783
        })
    ));
}

proptest::proptest! {
    /// Any front a peer could send is refused or fits the bounds, without a panic.
    #[test]
    fn any_front_is_checked_without_panic(
        c in proptest::prelude::any::<usize>(),
        h in 0usize..2000,
        w in 0usize..2000,
        scales in proptest::prelude::any::<usize>(),
        angles in 0usize..40,
        groups in 0usize..2000,
    ) {
        let f = front([c % 40, h, w], scales % 8, angles, groups);
        if f.check().is_ok() {
            let [gh, gw] = f.grid();
            proptest::prop_assert!(f.output()[0] * gh * gw <= MAX_FRONT_WORK);
            proptest::prop_assert!(f.output()[0].is_multiple_of(groups));
        }
        let huge = front([c, h, w], scales, angles, groups);
        let _ = huge.check();
    }
}
