use super::*;
use crate::ring::Prng;
use crate::ring::primes::generate_primes;

fn random(p: u64, n: usize, seed: u8) -> Vec<u64> {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let m = crate::ring::Modulus::new(p);
    let mut v = vec![0; n];
    prng.fill_uniform(&m, &mut v);
    v
}

/// The largest NTT prime of `bits` bits for degree n whose low 32-bit word is not 1.
fn other_low_word(bits: u32, n: usize) -> u64 {
    let step = 2 * n as u64;
    let mut q = ((1u64 << bits) - 1) / step * step + 1;
    while !(crate::ring::primes::is_prime(q) && q & 0xffff_ffff != 1) {
        q -= step;
    }
    q
}

#[test]
fn every_kernel_gives_tfhe_ntts_words() {
    for (n, bits) in [
        (16, 30),
        (64, 40),
        (1 << 10, 44),
        (1 << 12, 50),
        (1 << 13, 51),
        (1 << 14, 40),
        (1 << 11, 60),
        (1 << 12, 61),
        (1 << 10, 62),
        (1 << 13, 59),
    ] {
        let mut primes = generate_primes(bits, n, 2, &[]).unwrap();
        // a wide prime with another low word too (moduli need not be HEAL's own)
        if bits > 51 {
            primes.push(other_low_word(bits, n));
        }
        for p in primes {
            let plan = NttPlan::new(n, p).unwrap();
            let mut x = random(p, n, bits as u8);
            // the extremes of the input range too
            x[0] = p - 1;
            x[n - 1] = 0;
            let mut want = x.clone();
            plan.tfhe.fwd(&mut want);
            let mut back = want.clone();
            plan.tfhe.inv(&mut back);
            for k in plan.kernels() {
                let mut got = x.clone();
                plan.fwd_with(k, &mut got);
                assert_eq!(got, want, "forward, {k:?}, n = {n}, p = {p}");
                plan.inv_with(k, &mut got);
                assert_eq!(got, back, "inverse, {k:?}, n = {n}, p = {p}");
            }
        }
    }
}

#[test]
fn the_inverse_undoes_the_forward_times_n_and_products_are_negacyclic() {
    let n = 256;
    let p = generate_primes(50, n, 1, &[]).unwrap()[0];
    let plan = NttPlan::new(n, p).unwrap();
    let a = random(p, n, 1);
    let b = random(p, n, 2);
    // schoolbook negacyclic product
    let mut want = vec![0u64; n];
    for (i, &ai) in a.iter().enumerate() {
        for (j, &bj) in b.iter().enumerate() {
            let prod = mul_mod(ai, bj, p);
            let k = (i + j) % n;
            want[k] = if i + j < n {
                (want[k] + prod) % p
            } else {
                (want[k] + p - prod) % p
            };
        }
    }
    let n_inv = pow_mod(n as u64, p - 2, p);
    for k in plan.kernels() {
        let (mut fa, mut fb) = (a.clone(), b.clone());
        plan.fwd_with(k, &mut fa);
        plan.fwd_with(k, &mut fb);
        let mut c: Vec<u64> = fa
            .iter()
            .zip(&fb)
            .map(|(&x, &y)| mul_mod(x, y, p))
            .collect();
        plan.inv_with(k, &mut c);
        let c: Vec<u64> = c.iter().map(|&x| mul_mod(x, n_inv, p)).collect();
        assert_eq!(c, want, "{k:?}");
    }
}

#[test]
fn each_level_picks_a_kernel_it_can_run() {
    let plan = NttPlan::new(1 << 10, generate_primes(40, 1 << 10, 1, &[]).unwrap()[0]).unwrap();
    let wide = NttPlan::new(1 << 10, generate_primes(60, 1 << 10, 1, &[]).unwrap()[0]).unwrap();
    // the scalar level: tfhe-ntt's portable code on aarch64, HEAL's Harvey butterflies on x86
    let scalar = if cfg!(target_arch = "aarch64") {
        Kernel::Tfhe
    } else {
        Kernel::Shoup
    };
    assert_eq!(plan.kernel(Level::Scalar), scalar);
    assert_eq!(wide.kernel(Level::Scalar), scalar);
    // aarch64: doubles in NEON lanes for primes below 2^51, tfhe-ntt's portable code for wider
    // ones
    #[cfg(target_arch = "aarch64")]
    {
        assert_eq!(Level::detected(), Level::Neon);
        assert_eq!(
            plan.kernels(),
            vec![Kernel::Tfhe, Kernel::Shoup, Kernel::FloatNeon]
        );
        assert_eq!(plan.kernel(Level::Neon), Kernel::FloatNeon);
        assert_eq!(wide.kernel(Level::Neon), Kernel::Tfhe);
        assert_eq!(wide.kernels(), vec![Kernel::Tfhe, Kernel::Shoup]);
        return;
    }
    #[cfg(target_arch = "x86_64")]
    each_x86_level_picks_a_kernel_it_can_run(&plan, &wide);
}

#[cfg(target_arch = "x86_64")]
fn each_x86_level_picks_a_kernel_it_can_run(plan: &NttPlan, wide: &NttPlan) {
    assert_eq!(plan.kernel(Level::Avx2), Kernel::FloatAvx2);
    assert_eq!(plan.kernel(Level::Avx512), Kernel::FloatAvx512);
    assert_eq!(plan.kernel(Level::Ifma), Kernel::Tfhe);
    // primes too wide for doubles (below 2^61): HEAL's 64-bit lanes at both vector levels
    assert_eq!(wide.kernel(Level::Avx2), Kernel::LanesAvx2);
    assert_eq!(wide.kernel(Level::Avx512), Kernel::LanesAvx512);
    assert_eq!(wide.kernel(Level::Ifma), Kernel::Tfhe);
    // 62-bit primes: tfhe-ntt at the CPU's own level, HEAL's 64-bit scalar kernel below it
    let widest = NttPlan::new(1 << 10, generate_primes(62, 1 << 10, 1, &[]).unwrap()[0]).unwrap();
    let best = Level::detected();
    for l in [Level::Avx2, Level::Avx512] {
        let want = if l == best {
            Kernel::Tfhe
        } else {
            Kernel::ShoupMulx
        };
        assert_eq!(widest.kernel(l), want, "{l}");
    }
}
