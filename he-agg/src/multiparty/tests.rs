//! N ∈ {3, 10, 50} parties simulated in memory.

use std::sync::Arc;

use super::flooding::{DEFAULT_STATISTICAL_SECURITY, fresh_noise_bound};
use super::sealed::ExchangeKeys;
use super::threshold::deal;
use super::wire::*;
use super::*;
use crate::ckks::{
    Ciphertext, CkksContext, Complex, GaloisKeys, Parameters, Preset, PublicKey, SecretKey,
};
use crate::ring::Prng;

/// N = 2^10 (insecure, for speed), Q = 60 + 40 + 40 bits, one special prime, one prime per digit.
pub(super) fn small_ctx() -> Arc<CkksContext> {
    CkksContext::new(Parameters::insecure_for_tests(10, &[60, 40, 40], &[61], 3, 40.0).unwrap())
        .unwrap()
}

pub(super) struct Consortium {
    pub(super) ctx: Arc<CkksContext>,
    pub(super) secrets: Vec<SecretKey>,
    pub(super) prngs: Vec<Prng>,
    pub(super) crs: Crs,
}

impl Consortium {
    pub(super) fn new(ctx: &Arc<CkksContext>, parties: usize) -> Self {
        let mut kg = ctx.key_generator().unwrap();
        let secrets = (0..parties).map(|_| kg.secret_key()).collect();
        let prngs = (0..parties)
            .map(|i| Prng::from_seed(&[i as u8 + 1; 32]))
            .collect();
        Self {
            ctx: ctx.clone(),
            secrets,
            prngs,
            crs: Crs::from_federation(b"test federation"),
        }
    }

    /// s = Σ s_i — only tests ever form it.
    fn collective_secret(&self) -> SecretKey {
        super::sum_of_secrets(&self.ctx, &self.secrets)
    }

    pub(super) fn public_key(&mut self) -> PublicKey {
        let proto = PublicKeyGen::new(&self.ctx, &self.crs);
        let mut shares = self
            .secrets
            .iter()
            .zip(&mut self.prngs)
            .map(|(sk, p)| proto.share(sk, p).unwrap());
        let mut acc = shares.next().unwrap();
        for s in shares {
            proto.aggregate(&mut acc, &s).unwrap();
        }
        proto.finalize(acc)
    }

    fn relinearization_key(&mut self) -> crate::rlwe::RelinearizationKey {
        let proto = RelinKeyGen::new(&self.ctx, &self.crs).unwrap();
        let mut ephs = Vec::new();
        let mut acc1: Option<RelinKeyShare1> = None;
        for (sk, p) in self.secrets.iter().zip(&mut self.prngs) {
            let (e, s1) = proto.round1(sk, p).unwrap();
            // every share crosses the wire
            let s1 = decode_relin_share1(&self.ctx, &encode_relin_share1(&self.ctx, &s1)).unwrap();
            ephs.push(e);
            match acc1.as_mut() {
                None => acc1 = Some(s1),
                Some(a) => proto.aggregate1(a, &s1).unwrap(),
            }
        }
        let acc1 = acc1.unwrap();
        let mut acc2: Option<RelinKeyShare2> = None;
        for ((sk, p), e) in self.secrets.iter().zip(&mut self.prngs).zip(&ephs) {
            let s2 = proto.round2(e, sk, &acc1, p).unwrap();
            let s2 = decode_relin_share2(&self.ctx, &encode_relin_share2(&self.ctx, &s2)).unwrap();
            match acc2.as_mut() {
                None => acc2 = Some(s2),
                Some(a) => proto.aggregate2(a, &s2).unwrap(),
            }
        }
        proto.finalize(&acc1, acc2.unwrap()).unwrap()
    }

    fn galois_keys(&mut self, steps: &[i64], conjugate: bool) -> GaloisKeys {
        let proto = GaloisKeyGen::new(&self.ctx, &self.crs).unwrap();
        let rl = self.ctx.rlwe();
        let mut elements: Vec<u64> = steps
            .iter()
            .map(|&k| rl.galois_element_for_rotation(k))
            .collect();
        if conjugate {
            elements.push(rl.galois_element_conjugate());
        }
        let mut keys = GaloisKeys::new();
        for g in elements {
            let mut acc: Option<GaloisKeyShare> = None;
            for (sk, p) in self.secrets.iter().zip(&mut self.prngs) {
                let s = proto.share(sk, g, p).unwrap();
                let s =
                    decode_galois_share(&self.ctx, &encode_galois_share(&self.ctx, &s)).unwrap();
                match acc.as_mut() {
                    None => acc = Some(s),
                    Some(a) => proto.aggregate(a, &s).unwrap(),
                }
            }
            keys.insert(proto.finalize(acc.unwrap()).unwrap());
        }
        keys
    }
}

pub(super) fn values(seed: u8, len: usize) -> Vec<Complex> {
    let mut prng = Prng::from_seed(&[seed; 32]);
    let mut u = || (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0;
    (0..len).map(|_| Complex::new(u(), u())).collect()
}

pub(super) fn max_err(a: &[Complex], b: &[Complex]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x - *y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn collective_keys_behave_like_single_party_keys() {
    let ctx = small_ctx();
    for parties in [3usize, 10, 50] {
        let mut c = Consortium::new(&ctx, parties);
        let pk = c.public_key();
        let rlk = c.relinearization_key();
        let gks = c.galois_keys(&[1, -3], true);
        let s = c.collective_secret();
        let eval = ctx.evaluator(Some(&rlk), Some(&gks)).unwrap();
        let dec = ctx.decryptor(&s).unwrap();
        let x = values(1, ctx.slots());
        let y = values(2, ctx.slots());
        let mut enc = ctx.pk_encryptor(&pk).unwrap();
        let (a, b) = (
            enc.encrypt(&ctx.encode(&x, 3, ctx.default_scale()).unwrap()),
            enc.encrypt(&ctx.encode(&y, 3, ctx.default_scale()).unwrap()),
        );
        let fresh = max_err(&x, &ctx.decode(&dec.decrypt(&a)).unwrap());
        assert!(fresh < 1e-6, "{parties} parties: fresh error {fresh}");
        let prod = eval.rescale(&eval.mul_relin(&a, &b).unwrap()).unwrap();
        let want: Vec<Complex> = x.iter().zip(&y).map(|(p, q)| *p * *q).collect();
        let e = max_err(&want, &ctx.decode(&dec.decrypt(&prod)).unwrap());
        assert!(e < 1e-5, "{parties} parties: product error {e}");
        let slots = ctx.slots() as i64;
        for k in [1i64, -3] {
            let r = eval.rotate(&a, k).unwrap();
            let want: Vec<Complex> = (0..slots)
                .map(|j| x[(j + k).rem_euclid(slots) as usize])
                .collect();
            let e = max_err(&want, &ctx.decode(&dec.decrypt(&r)).unwrap());
            assert!(e < 1e-5, "{parties} parties: rotation {k} error {e}");
        }
        let conj = eval.conjugate(&a).unwrap();
        let want: Vec<Complex> = x.iter().map(|z| z.conj()).collect();
        assert!(max_err(&want, &ctx.decode(&dec.decrypt(&conj)).unwrap()) < 1e-5);
    }
}

/// Deals, seals, relays and combines the threshold shares of every party.
pub(super) fn threshold_secrets(c: &mut Consortium, t: usize) -> Vec<ThresholdSecret> {
    let ctx = c.ctx.clone();
    let n = c.secrets.len();
    let ids: Vec<u32> = (1..=n as u32).collect();
    let mut prng = Prng::from_seed(&[99; 32]);
    let exchange: Vec<ExchangeKeys> = (0..n).map(|_| ExchangeKeys::generate(&mut prng)).collect();
    let mut inbox: Vec<Vec<ShamirShare>> = vec![Vec::new(); n];
    for (i, sk) in c.secrets.iter().enumerate() {
        for share in deal(&ctx, sk, ids[i], &ids, t, &mut c.prngs[i]).unwrap() {
            let to = share.to() as usize - 1;
            let context = format!("fed|{}->{}", share.from(), share.to());
            let sealed = exchange[i]
                .seal(
                    &exchange[to].public(),
                    context.as_bytes(),
                    &encode_shamir_share(&ctx, &share),
                    &mut prng,
                )
                .unwrap();
            // the relay sees only the sealed bytes
            let opened = exchange[to]
                .open(&exchange[i].public(), context.as_bytes(), &sealed)
                .unwrap();
            inbox[to].push(decode_shamir_share(&ctx, &opened).unwrap());
        }
    }
    inbox
        .iter()
        .enumerate()
        .map(|(j, shares)| ThresholdSecret::combine(&ctx, ids[j], t, &ids, shares).unwrap())
        .collect()
}

/// PCKS of `ct` to `target` by the parties `active` (1-based), with their threshold secrets.
fn pcks(
    ctx: &Arc<CkksContext>,
    secrets: &[ThresholdSecret],
    active: &[u32],
    target: &PublicKey,
    ct: &Ciphertext,
    flooding: &Flooding,
) -> Ciphertext {
    let proto = PublicKeySwitch::new(ctx, flooding.clone(), active.len());
    let mut acc: Option<PublicKeySwitchShare> = None;
    for &i in active {
        let ts = &secrets[i as usize - 1];
        let share_key = ts.additive_share(ctx, active).unwrap_or_else(|_| {
            // below the threshold the Lagrange combination is refused; the coalition's best try
            // is its Lagrange combination at 0 anyway, which is still not s
            let lambda = super::threshold::lagrange_share(ctx, i, active, 1).unwrap();
            let rl = ctx.rlwe();
            let mut p = ts.raw_poly().clone();
            rl.ring().mul_scalar_assign(&mut p, &lambda, rl.key_basis());
            SecretKey::from_poly(p, *ctx.fingerprint())
        });
        let mut prng = Prng::from_seed(&[i as u8; 32]);
        let s = proto.share(&share_key, target, ct, &mut prng).unwrap();
        let s =
            decode_public_key_switch_share(ctx, &encode_public_key_switch_share(ctx, &s)).unwrap();
        match acc.as_mut() {
            None => acc = Some(s),
            Some(a) => proto.aggregate(a, &s).unwrap(),
        }
    }
    proto.finalize(ct, acc.unwrap()).unwrap()
}

#[test]
fn any_t_of_n_reencrypt_and_t_minus_1_cannot() {
    let ctx =
        CkksContext::new(Parameters::insecure_for_tests(10, &[60, 60], &[], 1, 40.0).unwrap())
            .unwrap();
    for (parties, t) in [(5usize, 3usize), (10, 4)] {
        let mut c = Consortium::new(&ctx, parties);
        let pk = c.public_key();
        let secrets = threshold_secrets(&mut c, t);
        // the hospital that receives the result
        let mut kg = ctx.key_generator().unwrap();
        let target_sk = kg.secret_key();
        let target_pk = kg.public_key(&target_sk);
        let x = values(7, ctx.slots());
        let scale = 2f64.powi(75);
        let ct = ctx
            .pk_encryptor(&pk)
            .unwrap()
            .encrypt(&ctx.encode(&x, 2, scale).unwrap());
        let flooding = Flooding::new(30, fresh_noise_bound(&ctx, parties)).unwrap();
        let dec = ctx.decryptor(&target_sk).unwrap();
        let mut prng = Prng::from_seed(&[3; 32]);
        for trial in 0..3 {
            // a random active set of exactly t parties
            let mut ids: Vec<u32> = (1..=parties as u32).collect();
            for i in (1..ids.len()).rev() {
                ids.swap(i, (prng.next_u64() % (i as u64 + 1)) as usize);
            }
            let active = &ids[..t];
            let out = pcks(&ctx, &secrets, active, &target_pk, &ct, &flooding);
            let e = max_err(&x, &ctx.decode(&dec.decrypt(&out)).unwrap());
            assert!(
                e < 1e-4,
                "{parties} parties, t = {t}, trial {trial}: error {e}"
            );
            // t − 1 of them: the Lagrange combination is refused, and their raw shares give noise
            let fewer = &active[..t - 1];
            assert!(matches!(
                secrets[fewer[0] as usize - 1].additive_share(&ctx, fewer),
                Err(MultipartyError::TooFewParties { .. })
            ));
            let out = pcks(&ctx, &secrets, fewer, &target_pk, &ct, &flooding);
            let e = max_err(&x, &ctx.decode(&dec.decrypt(&out)).unwrap());
            assert!(
                e > 1e3,
                "{parties} parties: t − 1 shares decrypted (error {e})"
            );
        }
    }
}

#[test]
fn weighted_aggregate_through_pcks_matches_the_plaintext_average() {
    // the aggregation preset, for real: 3 hospitals hold the key, 20 clients contribute
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let parties = 3;
    let mut c = Consortium::new(&ctx, parties);
    let pk = c.public_key();
    let eval = ctx.evaluator(None, None).unwrap();
    let n = ctx.n();
    let clients = 20;
    let mut prng = Prng::from_seed(&[42; 32]);
    let weights: Vec<i64> = (0..clients)
        .map(|_| 1 + (prng.next_u64() % 100_000) as i64)
        .collect();
    let updates: Vec<Vec<f64>> = (0..clients)
        .map(|_| {
            (0..n)
                .map(|_| (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0)
                .collect()
        })
        .collect();
    let scale = 2f64.powi(85);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let mut acc: Option<Ciphertext> = None;
    for (u, &w) in updates.iter().zip(&weights) {
        let ct = enc.encrypt(&ctx.encode_real_pairs(u, 2, scale).unwrap());
        let wct = eval.mul_int(&ct, w).unwrap();
        acc = Some(match acc {
            None => wct,
            Some(a) => eval.add(&a, &wct).unwrap(),
        });
    }
    let sum = acc.unwrap();
    let total: i64 = weights.iter().sum();
    let norm: f64 = weights
        .iter()
        .map(|&w| (w as f64).powi(2))
        .sum::<f64>()
        .sqrt();
    let flooding = Flooding::new(
        DEFAULT_STATISTICAL_SECURITY,
        fresh_noise_bound(&ctx, parties) * norm,
    )
    .unwrap();
    let headroom = flooding
        .check_headroom(&ctx, 2, scale, total as f64, parties)
        .unwrap();
    // the flooding's standard deviation per slot of the average, far below the 1e-6 asked for
    assert!(headroom.slot_error / (total as f64) < 1e-8, "{headroom:?}");
    let mut kg = ctx.key_generator().unwrap();
    let hospital_sk = kg.secret_key();
    let hospital_pk = kg.public_key(&hospital_sk);
    let proto = PublicKeySwitch::new(&ctx, flooding, parties);
    let mut agg: Option<PublicKeySwitchShare> = None;
    for (sk, p) in c.secrets.iter().zip(&mut c.prngs) {
        let s = proto.share(sk, &hospital_pk, &sum, p).unwrap();
        match agg.as_mut() {
            None => agg = Some(s),
            Some(a) => proto.aggregate(a, &s).unwrap(),
        }
    }
    let out = proto.finalize(&sum, agg.unwrap()).unwrap();
    let got = ctx
        .decode_real_pairs(&ctx.decryptor(&hospital_sk).unwrap().decrypt(&out))
        .unwrap();
    let mut worst = 0f64;
    for i in 0..n {
        let want: f64 = updates
            .iter()
            .zip(&weights)
            .map(|(u, &w)| u[i] * w as f64)
            .sum::<f64>()
            / total as f64;
        worst = worst.max((got[i] / total as f64 - want).abs());
    }
    assert!(worst <= 1e-6, "weighted average error {worst}");
}

#[test]
fn flooding_noise_has_the_configured_variance() {
    let ctx =
        CkksContext::new(Parameters::insecure_for_tests(10, &[60, 60], &[], 1, 40.0).unwrap())
            .unwrap();
    let parties = 4;
    let mut c = Consortium::new(&ctx, parties);
    let pk = c.public_key();
    let zero = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&[], 2, 1.0).unwrap());
    let mut kg = ctx.key_generator().unwrap();
    let target_sk = kg.secret_key();
    let target_pk = kg.public_key(&target_sk);
    let flooding = Flooding::new(30, 1000.0).unwrap();
    let proto = PublicKeySwitch::new(&ctx, flooding.clone(), parties);
    let mut agg: Option<PublicKeySwitchShare> = None;
    for (sk, p) in c.secrets.iter().zip(&mut c.prngs) {
        let s = proto.share(sk, &target_pk, &zero, p).unwrap();
        match agg.as_mut() {
            None => agg = Some(s),
            Some(a) => proto.aggregate(a, &s).unwrap(),
        }
    }
    let out = proto.finalize(&zero, agg.unwrap()).unwrap();
    let coeffs = ctx.lift_coefficients(&ctx.decryptor(&target_sk).unwrap().decrypt(&out));
    // the sum of 4 flooding samples dominates every other term by 2^30
    let var = coeffs.iter().map(|x| x * x).sum::<f64>() / coeffs.len() as f64;
    let want = parties as f64 * flooding.sigma().powi(2);
    let ratio = var / want;
    // the variance estimate of 1024 samples has a relative standard error of √(2/1024) ≈ 4.4%
    assert!((0.85..1.15).contains(&ratio), "variance ratio {ratio}");
}

#[test]
fn headroom_and_flooding_parameters_are_checked_up_front() {
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    assert_eq!(
        Flooding::new(20, 100.0).unwrap_err(),
        MultipartyError::WeakFlooding(20)
    );
    assert!(matches!(
        Flooding::new(40, f64::NAN),
        Err(MultipartyError::NoiseBound(_))
    ));
    // σ = 2^101 would leave the sampler's fine part short of the float's resolution
    assert_eq!(
        Flooding::new(41, 2f64.powi(60)).unwrap_err(),
        MultipartyError::FloodingTooWide(101.0)
    );
    let f = Flooding::new(40, 2f64.powi(40)).unwrap();
    // 2^80 of flooding with a scale of 2^60 leaves no room under 2^119 for values near 2^0…
    assert!(f.check_headroom(&ctx, 2, 2f64.powi(60), 1.0, 3).is_ok());
    // …but not at one limb (2^59), nor with values of 2^60
    assert!(matches!(
        f.check_headroom(&ctx, 1, 2f64.powi(40), 1.0, 3),
        Err(MultipartyError::Headroom { .. })
    ));
    assert!(matches!(
        f.check_headroom(&ctx, 2, 2f64.powi(60), 2f64.powi(60), 3),
        Err(MultipartyError::Headroom { .. })
    ));
    // and a share is refused when the ciphertext cannot hold the flooding
    let mut c = Consortium::new(&ctx, 3);
    let pk = c.public_key();
    let ct = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&[], 1, 2f64.powi(40)).unwrap());
    let proto = PublicKeySwitch::new(&ctx, f, 3);
    assert!(matches!(
        proto.share(&c.secrets[0], &pk, &ct, &mut c.prngs[0]),
        Err(MultipartyError::Headroom { .. })
    ));
}

#[test]
fn malformed_shares_and_misuse_are_refused() {
    let ctx = small_ctx();
    let mut c = Consortium::new(&ctx, 3);
    let proto = PublicKeyGen::new(&ctx, &c.crs);
    let share = proto.share(&c.secrets[0], &mut c.prngs[0]).unwrap();
    let bytes = encode_public_key_share(&ctx, &share);
    assert_eq!(decode_public_key_share(&ctx, &bytes).unwrap(), share);
    assert!(matches!(
        decode_public_key_share(&ctx, &bytes[..bytes.len() - 1]),
        Err(crate::ckks::wire::WireError::Length { .. })
    ));
    assert!(matches!(
        decode_relin_share1(&ctx, &bytes),
        Err(crate::ckks::wire::WireError::WrongKind { .. })
    ));
    let mut big = bytes.clone();
    for b in &mut big[40..48] {
        *b = 0xff;
    }
    assert!(matches!(
        decode_public_key_share(&ctx, &big),
        Err(crate::ckks::wire::WireError::Residue { .. })
    ));
    // a share of other parameters
    let other = CkksContext::new(
        Parameters::insecure_for_tests(10, &[60, 40, 41], &[61], 3, 40.0).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        decode_public_key_share(&other, &bytes),
        Err(crate::ckks::wire::WireError::Fingerprint)
    ));
    let other_sk = other.key_generator().unwrap().secret_key();
    assert!(matches!(
        proto.share(&other_sk, &mut c.prngs[0]),
        Err(MultipartyError::Foreign { .. })
    ));
    // Galois shares: wrong digit count, bad element
    let gproto = GaloisKeyGen::new(&ctx, &c.crs).unwrap();
    let g = gproto.share(&c.secrets[0], 5, &mut c.prngs[0]).unwrap();
    let gb = encode_galois_share(&ctx, &g);
    let mut wrong_digits = gb.clone();
    wrong_digits[48] = 2;
    assert!(matches!(
        decode_galois_share(&ctx, &wrong_digits),
        Err(crate::ckks::wire::WireError::Digits { .. })
    ));
    let mut even = gb.clone();
    even[40..48].copy_from_slice(&4u64.to_le_bytes());
    assert!(matches!(
        decode_galois_share(&ctx, &even),
        Err(crate::ckks::wire::WireError::GaloisElement(4))
    ));
    assert!(gproto.share(&c.secrets[0], 4, &mut c.prngs[0]).is_err());
    let mut other_g = gproto.share(&c.secrets[1], 25, &mut c.prngs[1]).unwrap();
    assert!(matches!(
        gproto.aggregate(&mut other_g, &g),
        Err(MultipartyError::Shape(_))
    ));
    // threshold misuse
    let ids = [1u32, 2, 3];
    assert!(matches!(
        deal(&ctx, &c.secrets[0], 1, &ids, 4, &mut c.prngs[0]),
        Err(MultipartyError::Threshold { .. })
    ));
    assert!(matches!(
        deal(&ctx, &c.secrets[0], 1, &[1, 2, 2], 2, &mut c.prngs[0]),
        Err(MultipartyError::PartyIndex(2))
    ));
    assert!(matches!(
        deal(&ctx, &c.secrets[0], 1, &[0, 1, 2], 2, &mut c.prngs[0]),
        Err(MultipartyError::PartyIndex(0))
    ));
    let shares = deal(&ctx, &c.secrets[0], 1, &ids, 2, &mut c.prngs[0]).unwrap();
    // party 2 given party 3's share
    let wrong: Vec<ShamirShare> = shares.iter().filter(|s| s.to() == 3).cloned().collect();
    assert!(matches!(
        ThresholdSecret::combine(&ctx, 2, 1, &[1], &wrong),
        Err(MultipartyError::Misaddressed { .. })
    ));
    // missing dealers
    let mine: Vec<ShamirShare> = shares.iter().filter(|s| s.to() == 2).cloned().collect();
    assert!(matches!(
        ThresholdSecret::combine(&ctx, 2, 2, &ids, &mine),
        Err(MultipartyError::MissingShares { .. })
    ));
    let ts = ThresholdSecret::combine(&ctx, 2, 1, &[1], &mine).unwrap();
    assert!(matches!(
        ts.additive_share(&ctx, &[1, 3]),
        Err(MultipartyError::NotActive(2))
    ));
    let sb = encode_shamir_share(&ctx, &shares[0]);
    let mut zero_index = sb.to_vec();
    zero_index[40..44].copy_from_slice(&0u32.to_le_bytes());
    assert!(matches!(
        decode_shamir_share(&ctx, &zero_index),
        Err(crate::ckks::wire::WireError::PartyIndex(0))
    ));
    // PCKS shares of different levels do not add
    let pk = c.public_key();
    let f = Flooding::new(30, 100.0).unwrap();
    let pcks = PublicKeySwitch::new(&ctx, f, 3);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let ct3 = enc.encrypt(&ctx.encode(&[], 3, 2f64.powi(80)).unwrap());
    let ct2 = enc.encrypt(&ctx.encode(&[], 2, 2f64.powi(60)).unwrap());
    let mut s3 = pcks
        .share(&c.secrets[0], &pk, &ct3, &mut c.prngs[0])
        .unwrap();
    let s2 = pcks
        .share(&c.secrets[0], &pk, &ct2, &mut c.prngs[0])
        .unwrap();
    assert!(matches!(
        pcks.aggregate(&mut s3, &s2),
        Err(MultipartyError::Shape(_))
    ));
    let shown = format!("{:?}", shares[0]);
    assert!(!shown.contains("poly"), "{shown}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 256, ..Default::default() })]

    /// Random bytes, half of them behind a valid header, never make a share decoder panic.
    #[test]
    fn share_decoders_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096), kind in 8u8..=17) {
        use std::sync::OnceLock;
        static CTX: OnceLock<Arc<CkksContext>> = OnceLock::new();
        let ctx = CTX.get_or_init(|| CkksContext::new(Parameters::insecure_for_tests(5, &[50, 40], &[55], 2, 30.0).unwrap()).unwrap());
        let mut b = bytes;
        if b.len() >= crate::ckks::wire::HEADER_LEN && b[0] % 2 == 0 {
            b[..4].copy_from_slice(&crate::ckks::wire::MAGIC);
            b[4..6].copy_from_slice(&crate::ckks::wire::VERSION.to_le_bytes());
            b[6] = kind;
            b[7] = 0;
            b[8..40].copy_from_slice(ctx.fingerprint());
        }
        let _ = decode_public_key_share(ctx, &b);
        let _ = decode_relin_share1(ctx, &b);
        let _ = decode_relin_share2(ctx, &b);
        let _ = decode_galois_share(ctx, &b);
        let _ = decode_key_switch_share(ctx, &b);
        let _ = decode_public_key_switch_share(ctx, &b);
        let _ = decode_shamir_share(ctx, &b);
        let _ = decode_threshold_secret(ctx, &b);
        let _ = decode_refresh_share(ctx, &b);
        let _ = decode_switch_input(ctx, &b);
    }

    /// A switch input with one byte changed or cut short: refused or decoded to the same shape.
    #[test]
    fn mutated_switch_inputs_never_panic(pos in proptest::prelude::any::<proptest::sample::Index>(), byte in proptest::prelude::any::<u8>(), cut in proptest::prelude::any::<proptest::sample::Index>()) {
        let ctx = small_ctx();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let ct = ctx.sk_encryptor(&sk).unwrap().encrypt(&ctx.encode(&[], 3, 2f64.powi(40)).unwrap());
        let good = encode_switch_input(&ctx, &SwitchInput::of(&ct).unwrap());
        let mut b = good.clone();
        b[pos.index(good.len())] = byte;
        if let Ok(input) = decode_switch_input(&ctx, &b) {
            proptest::prop_assert!(input.level() >= 1 && input.c1().limbs() == input.level());
        }
        let t = cut.index(good.len());
        proptest::prop_assert!(decode_switch_input(&ctx, &good[..t]).is_err());
    }
}

#[test]
fn a_switch_input_is_the_c1_and_scale_of_its_ciphertext() {
    let ctx = small_ctx();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let pk = kg.public_key(&sk);
    let target_sk = kg.secret_key();
    let target = kg.public_key(&target_sk);
    let ct = ctx.pk_encryptor(&pk).unwrap().encrypt(
        &ctx.encode_real_pairs(&[0.5, -0.25], 3, 2f64.powi(40))
            .unwrap(),
    );
    let input = SwitchInput::of(&ct).unwrap();
    let bytes = encode_switch_input(&ctx, &input);
    assert_eq!(bytes.len(), switch_input_len(&ctx, 3));
    assert_eq!(encode_switch_input_of(&ctx, &ct), Some(bytes.clone()));
    let back = decode_switch_input(&ctx, &bytes).unwrap();
    assert_eq!(back, input);
    assert_eq!(back.c1(), &ct.parts[1]);
    // its share equals the share of the whole ciphertext, with the same randomness
    let flooding = Flooding::new(40, 1.0).unwrap();
    let proto = PublicKeySwitch::new(&ctx, flooding, 1);
    let from_input = proto
        .share_input(&sk, &target, &back, &mut Prng::from_seed(&[3; 32]))
        .unwrap();
    let from_ct = proto
        .share(&sk, &target, &ct, &mut Prng::from_seed(&[3; 32]))
        .unwrap();
    assert_eq!(from_input, from_ct);
    // a ciphertext's bytes are not a switch input, nor is a degree-2 ciphertext one
    assert!(matches!(
        decode_switch_input(&ctx, &crate::ckks::wire::encode_ciphertext(&ctx, &ct)),
        Err(crate::ckks::wire::WireError::WrongKind { .. })
    ));
    let eval = ctx.evaluator(None, None).unwrap();
    let squared = eval.mul(&ct, &ct).unwrap();
    assert!(SwitchInput::of(&squared).is_err());
    assert_eq!(encode_switch_input_of(&ctx, &squared), None);
}

#[test]
fn a_mask_made_ahead_gives_the_same_share_and_serves_only_its_flooding_and_level() {
    let ctx =
        CkksContext::new(Parameters::insecure_for_tests(10, &[60, 60], &[], 1, 40.0).unwrap())
            .unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let (sk, target_sk) = (kg.secret_key(), kg.secret_key());
    let (pk, target) = (kg.public_key(&sk), kg.public_key(&target_sk));
    let ct = ctx.pk_encryptor(&pk).unwrap().encrypt(
        &ctx.encode(&values(3, ctx.slots()), 2, 2f64.powi(75))
            .unwrap(),
    );
    let f = Flooding::new(30, fresh_noise_bound(&ctx, 1)).unwrap();
    let proto = PublicKeySwitch::new(&ctx, f.clone(), 1);
    // the same randomness, drawn before the ciphertext is known, gives the same share
    let direct = proto
        .share(&sk, &target, &ct, &mut Prng::from_seed(&[4; 32]))
        .unwrap();
    let mask = proto
        .mask(&target, ct.level(), &mut Prng::from_seed(&[4; 32]))
        .unwrap();
    assert_eq!(mask.level(), 2);
    assert_eq!(proto.share_with_mask(&sk, &ct, mask).unwrap(), direct);
    // and it switches: the target key decrypts the values
    let out = proto.finalize(&ct, direct).unwrap();
    let got = ctx
        .decode(&ctx.decryptor(&target_sk).unwrap().decrypt(&out))
        .unwrap();
    let want = values(3, ctx.slots());
    assert!(max_err(&got, &want) < 1e-3);
    // a mask of a weaker flooding, or of another level, is refused
    let weaker = PublicKeySwitch::new(
        &ctx,
        Flooding::new(30, fresh_noise_bound(&ctx, 1) / 2.0).unwrap(),
        1,
    );
    let mut prng = Prng::from_os().unwrap();
    let m = weaker.mask(&target, 2, &mut prng).unwrap();
    assert!(proto.share_with_mask(&sk, &ct, m).is_err());
    let m = proto.mask(&target, 1, &mut prng).unwrap();
    assert!(proto.share_with_mask(&sk, &ct, m).is_err());
    assert!(proto.mask(&target, 3, &mut prng).is_err());
}

#[path = "refresh_tests.rs"]
mod refresh_tests;
