use std::sync::Arc;

use super::super::Crs;
use super::super::flooding::fresh_noise_bound;
use super::super::tests::{Consortium, max_err, small_ctx, threshold_secrets, values};
use super::super::threshold::ThresholdSecret;
use super::super::wire::{decode_switched_result, encode_switched_result, switched_result_len};
use super::*;
use crate::ckks::Complex;
use crate::ckks::wire::WireError;

struct Setup {
    ctx: Arc<CkksContext>,
    secrets: Vec<ThresholdSecret>,
    receive: SecretKey,
    crs: Crs,
    flooding: Flooding,
    x: Vec<Complex>,
    ct: Ciphertext,
}

/// 5 hospitals, 3 to switch, a receiving key, one ciphertext at the top level.
fn setup() -> Setup {
    let ctx = small_ctx();
    let mut c = Consortium::new(&ctx, 5);
    let pk = c.public_key();
    let secrets = threshold_secrets(&mut c, 3);
    let receive = ctx.key_generator().unwrap().secret_key();
    let x = values(11, ctx.slots());
    let ct = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&x, ctx.max_level(), 2f64.powi(75)).unwrap());
    Setup {
        flooding: Flooding::new(30, fresh_noise_bound(&ctx, 5)).unwrap(),
        crs: c.crs.clone(),
        ctx,
        secrets,
        receive,
        x,
        ct,
    }
}

/// Switcher `i`'s share of `s.ct` in `active`, its flooding drawn from `prng_seed`.
fn share_of(
    s: &Setup,
    i: u32,
    active: &[u32],
    rescale: bool,
    prng_seed: u8,
) -> (KeySwitchShare, Seed) {
    let proto = ReceiveSwitch::new(&s.ctx, s.flooding.clone(), active.len());
    let input = SwitchInput::of(&s.ct).unwrap();
    let digest = *blake3::hash(&super::super::wire::encode_switch_input(&s.ctx, &input)).as_bytes();
    let seed = s.crs.receive_switch_seed(&digest, i, active);
    let sk = s.secrets[i as usize - 1]
        .additive_share(&s.ctx, active)
        .unwrap();
    let mut prng = Prng::from_seed(&[prng_seed; 32]);
    let mask = proto.flood(s.ct.level(), &mut prng).unwrap();
    let share = proto
        .share(&sk, &s.receive, &input, &seed, mask, rescale)
        .unwrap();
    (share, seed)
}

/// The result of `active` switching `s.ct`, through the wire.
fn switch(s: &Setup, active: &[u32], rescale: bool, prng_seed: u8) -> SwitchedResult {
    let proto = ReceiveSwitch::new(&s.ctx, s.flooding.clone(), active.len());
    let mut acc: Option<KeySwitchShare> = None;
    let mut seeds = Vec::new();
    for &i in active {
        let (share, seed) = share_of(s, i, active, rescale, prng_seed.wrapping_add(i as u8));
        seeds.push(seed);
        match acc.as_mut() {
            None => acc = Some(share),
            Some(a) => proto.aggregate(a, &share).unwrap(),
        }
    }
    let r = proto.finalize(&s.ct, acc.unwrap(), seeds).unwrap();
    let bytes = encode_switched_result(&s.ctx, &r);
    assert_eq!(
        bytes.len(),
        switched_result_len(&s.ctx, r.level(), active.len())
    );
    decode_switched_result(&s.ctx, &bytes).unwrap()
}

fn error_under(s: &Setup, sk: &SecretKey, ct: &Ciphertext) -> f64 {
    let pt = s.ctx.decryptor(sk).unwrap().decrypt(ct);
    max_err(&s.x, &s.ctx.decode(&pt).unwrap())
}

#[test]
fn any_t_switch_to_the_receiving_key_at_either_level() {
    let s = setup();
    for active in [[1u32, 2, 3], [2, 4, 5], [5, 1, 3]] {
        for rescale in [false, true] {
            let r = switch(&s, &active, rescale, 7);
            let level = s.ct.level() - usize::from(rescale);
            assert_eq!(r.level(), level);
            assert_eq!(r.a_seeds().len(), 3);
            let ct = r.expand(&s.ctx).unwrap();
            let e = error_under(&s, &s.receive, &ct);
            assert!(e < 1e-6, "{active:?}, level {level}: error {e}");
        }
    }
}

#[test]
fn the_coordinator_holds_no_key_that_opens_the_result() {
    let s = setup();
    let active = [1u32, 3, 4];
    let r = switch(&s, &active, false, 3);
    let ct = r.expand(&s.ctx).unwrap();
    // c0 alone (what the coordinator combines) is not the aggregate …
    let zero = Poly::zero(s.ctx.n(), r.level());
    let c0_only = Ciphertext {
        parts: vec![r.c0.clone(), zero],
        scale: r.scale,
    };
    assert!(error_under(&s, &s.receive, &c0_only) > 1e3);
    // … nor does the collective key (or any other) open it
    let other = s.ctx.key_generator().unwrap().secret_key();
    assert!(error_under(&s, &other, &ct) > 1e3);
    // a wrong seed (a coordinator's lie) decrypts to noise, which the range check refuses
    let mut lied = r.clone();
    lied.a_seeds[1][0] ^= 1;
    assert!(error_under(&s, &s.receive, &lied.expand(&s.ctx).unwrap()) > 1e3);
    // two of the three shares: neither the secret nor the masks add up
    let proto = ReceiveSwitch::new(&s.ctx, s.flooding.clone(), 3);
    let (a, seed_a) = share_of(&s, 1, &active, false, 1);
    let (mut b, seed_b) = share_of(&s, 3, &active, false, 2);
    proto.aggregate(&mut b, &a).unwrap();
    let two = proto.finalize(&s.ct, b, vec![seed_a, seed_b]).unwrap();
    assert!(error_under(&s, &s.receive, &two.expand(&s.ctx).unwrap()) > 1e3);
}

#[test]
fn answers_subtract_to_noise_only_for_the_same_input_and_set() {
    let s = setup();
    let lift = |p: &Poly| {
        let zero = Poly::zero(s.ctx.n(), p.limbs());
        let ct = Ciphertext {
            parts: vec![p.clone(), zero],
            scale: 1.0,
        };
        let pt = s.ctx.decryptor(&s.receive).unwrap().decrypt(&ct);
        s.ctx
            .lift_coefficients(&pt)
            .iter()
            .fold(0f64, |m, x| m.max(x.abs()))
    };
    let rl = s.ctx.rlwe();
    let basis = rl.q_basis(s.ct.level());
    let (a, _) = share_of(&s, 2, &[1, 2, 3], false, 1);
    let (b, _) = share_of(&s, 2, &[3, 2, 1], false, 2);
    // the same set in another order: the same mask and Lagrange coefficient, fresh flooding
    let same = rl.ring().sub(&a.h, &b.h, basis);
    assert!(
        lift(&same) < 2f64.powi(30 + 16),
        "difference {}",
        lift(&same)
    );
    // another set changes the Lagrange coefficient, and with it the mask
    let (c, _) = share_of(&s, 2, &[2, 3, 4], false, 3);
    let other = rl.ring().sub(&a.h, &c.h, basis);
    assert!(lift(&other) > 2f64.powi(100), "difference {}", lift(&other));
    // seeds name the input, the switcher and the set, not the set's order
    let d = [7u8; 32];
    let seed = s.crs.receive_switch_seed(&d, 2, &[1, 2, 3]);
    assert_eq!(seed, s.crs.receive_switch_seed(&d, 2, &[3, 1, 2]));
    assert_ne!(seed, s.crs.receive_switch_seed(&d, 1, &[1, 2, 3]));
    assert_ne!(seed, s.crs.receive_switch_seed(&d, 2, &[1, 2, 4]));
    assert_ne!(seed, s.crs.receive_switch_seed(&[8; 32], 2, &[1, 2, 3]));
    assert_ne!(
        seed,
        Crs::from_federation(b"another").receive_switch_seed(&d, 2, &[1, 2, 3])
    );
}

#[test]
fn masks_keys_levels_and_seed_counts_are_checked() {
    let s = setup();
    let active = [1u32, 2, 3];
    let proto = ReceiveSwitch::new(&s.ctx, s.flooding.clone(), 3);
    let input = SwitchInput::of(&s.ct).unwrap();
    let sk = s.secrets[0].additive_share(&s.ctx, &active).unwrap();
    let mut prng = Prng::from_seed(&[1; 32]);
    let seed = [0u8; 32];
    // a mask of another level, or of less flooding
    let low = proto.flood(s.ct.level() - 1, &mut prng).unwrap();
    assert!(
        proto
            .share(&sk, &s.receive, &input, &seed, low, false)
            .is_err()
    );
    let weak = ReceiveSwitch::new(&s.ctx, Flooding::new(30, 1.0).unwrap(), 3)
        .flood(s.ct.level(), &mut prng)
        .unwrap();
    assert!(
        proto
            .share(&sk, &s.receive, &input, &seed, weak, false)
            .is_err()
    );
    // keys of other parameters
    let other_ctx = CkksContext::new(
        crate::ckks::Parameters::insecure_for_tests(10, &[60, 40], &[61], 2, 40.0).unwrap(),
    )
    .unwrap();
    let foreign = other_ctx.key_generator().unwrap().secret_key();
    let mask = proto.flood(s.ct.level(), &mut prng).unwrap();
    assert!(matches!(
        proto.share(&sk, &foreign, &input, &seed, mask, false),
        Err(MultipartyError::Foreign { .. })
    ));
    // no seeds, or shares of a level the result cannot come at
    let mask = proto.flood(s.ct.level(), &mut prng).unwrap();
    let share = proto
        .share(&sk, &s.receive, &input, &seed, mask, false)
        .unwrap();
    assert!(proto.finalize(&s.ct, share.clone(), vec![]).is_err());
    let mut twice = share.clone();
    twice.rescale(&s.ctx).unwrap();
    twice.rescale(&s.ctx).unwrap();
    assert!(proto.finalize(&s.ct, twice.clone(), vec![seed]).is_err());
    let mut mixed = share;
    assert!(proto.aggregate(&mut mixed, &twice).is_err());
}

#[test]
fn switched_results_on_the_wire_are_validated() {
    let s = setup();
    let r = switch(&s, &[1, 2, 3], true, 5);
    let bytes = encode_switched_result(&s.ctx, &r);
    assert_eq!(decode_switched_result(&s.ctx, &bytes).unwrap(), r);
    // every truncation and any trailing byte
    for cut in [0, 39, 40, 52, bytes.len() - 1] {
        assert!(decode_switched_result(&s.ctx, &bytes[..cut]).is_err());
    }
    let mut long = bytes.clone();
    long.push(0);
    assert!(matches!(
        decode_switched_result(&s.ctx, &long),
        Err(WireError::Length { .. })
    ));
    // a seed count of 0 or above the limit, before anything is allocated
    let count_at = crate::ckks::wire::HEADER_LEN + 1 + 8;
    for count in [0u16, MAX_SWITCHERS as u16 + 1, u16::MAX] {
        let mut b = bytes.clone();
        b[count_at..count_at + 2].copy_from_slice(&count.to_le_bytes());
        assert!(matches!(
            decode_switched_result(&s.ctx, &b),
            Err(WireError::Seeds { .. })
        ));
    }
    // another kind of object
    let ct = crate::ckks::wire::encode_ciphertext(&s.ctx, &s.ct);
    assert!(matches!(
        decode_switched_result(&s.ctx, &ct),
        Err(WireError::WrongKind { .. })
    ));
}

/// Five hospitals' updates, each under its own secret, weighted and summed (c0 alone), and
/// everything a switcher needs: the threshold secrets and the seeds of the a's.
struct Updates {
    ctx: Arc<CkksContext>,
    held: Vec<ThresholdSecret>,
    receive: SecretKey,
    crs: Crs,
    flooding: Flooding,
    weights: Vec<(u32, u64)>,
    a_seeds: Vec<Seed>,
    sum: Ciphertext,
    want: Vec<Complex>,
}

fn updates() -> Updates {
    let ctx = small_ctx();
    let mut c = Consortium::new(&ctx, 5);
    let held = threshold_secrets(&mut c, 3);
    let weights: Vec<(u32, u64)> = vec![(1, 3), (2, 1), (3, 4), (4, 1), (5, 5)];
    let (level, scale) = (ctx.max_level(), 2f64.powi(75));
    let ring = ctx.rlwe().ring();
    let basis = ctx.rlwe().q_basis(level);
    let mut sum = Poly::zero(ctx.n(), level);
    let mut want = vec![Complex::new(0.0, 0.0); ctx.slots()];
    let mut a_seeds = Vec::new();
    for (i, &(_, w)) in weights.iter().enumerate() {
        let x = values(30 + i as u8, ctx.slots());
        let ct = ctx
            .sk_encryptor(&c.secrets[i])
            .unwrap()
            .encrypt_seeded_aes(&ctx.encode(&x, level, scale).unwrap(), [40 + i as u8; 32]);
        let mut c0 = ct.c0.clone();
        let factor: Vec<u64> = basis.iter().map(|&j| ring.modulus(j).reduce(w)).collect();
        ring.mul_scalar_assign(&mut c0, &factor, basis);
        ring.add_assign(&mut sum, &c0, basis);
        a_seeds.push(ct.seed);
        for (acc, v) in want.iter_mut().zip(&x) {
            *acc = *acc + *v * Complex::new(w as f64, 0.0);
        }
    }
    Updates {
        flooding: Flooding::new(30, fresh_noise_bound(&ctx, 5) * 14.0).unwrap(),
        receive: ctx.key_generator().unwrap().secret_key(),
        crs: c.crs.clone(),
        held,
        weights,
        a_seeds,
        sum: Ciphertext {
            parts: vec![sum],
            scale,
        },
        want,
        ctx,
    }
}

/// `active` switching `u.sum`, each switcher making its keys for `named` contributions with
/// the seeds `a_seeds`.
fn switch_updates(
    u: &Updates,
    active: &[u32],
    named: &[(u32, u64)],
    a_seeds: &[Seed],
    rescale: bool,
) -> Ciphertext {
    let proto = ReceiveSwitch::new(&u.ctx, u.flooding.clone(), active.len());
    let sum = UpdateSum {
        level: u.sum.level(),
        scale: u.sum.scale,
        a_seeds,
    };
    let mut acc: Option<KeySwitchShare> = None;
    let mut seeds = Vec::new();
    for &i in active {
        let keys = u.held[i as usize - 1]
            .weighted_shares(&u.ctx, active, named)
            .unwrap();
        let seed = u.crs.receive_switch_seed(&[i as u8; 32], i, active);
        let mask = proto
            .flood(sum.level, &mut Prng::from_seed(&[i as u8; 32]))
            .unwrap();
        let share = proto
            .share_updates(&keys, &u.receive, &sum, &seed, mask, rescale)
            .unwrap();
        seeds.push(seed);
        match acc.as_mut() {
            None => acc = Some(share),
            Some(a) => proto.aggregate(a, &share).unwrap(),
        }
    }
    let r = proto.finalize(&u.sum, acc.unwrap(), seeds).unwrap();
    r.expand(&u.ctx).unwrap()
}

fn sum_error(u: &Updates, ct: &Ciphertext) -> f64 {
    let pt = u.ctx.decryptor(&u.receive).unwrap().decrypt(ct);
    max_err(&u.want, &u.ctx.decode(&pt).unwrap())
}

#[test]
fn a_weighted_sum_of_own_key_updates_switches_with_any_t_and_only_as_signed() {
    let u = updates();
    for active in [[1u32, 2, 3], [2, 4, 5], [5, 1, 3]] {
        for rescale in [false, true] {
            let ct = switch_updates(&u, &active, &u.weights, &u.a_seeds, rescale);
            let e = sum_error(&u, &ct);
            assert!(e < 1e-6, "{active:?}, rescale {rescale}: error {e}");
        }
    }
    // the sum holds hospital 5's update, the switch does not name it: no meaningful result
    let ct = switch_updates(&u, &[1, 2, 3], &u.weights[..4], &u.a_seeds[..4], false);
    assert!(sum_error(&u, &ct) > 1e3);
    // another weight than the sum was made with, or a seed other than the encryption's
    let mut reweighed = u.weights.clone();
    reweighed[2].1 += 1;
    let ct = switch_updates(&u, &[1, 2, 3], &reweighed, &u.a_seeds, false);
    assert!(sum_error(&u, &ct) > 1e3);
    let mut lied = u.a_seeds.clone();
    lied[0][0] ^= 1;
    let ct = switch_updates(&u, &[1, 2, 3], &u.weights, &lied, false);
    assert!(sum_error(&u, &ct) > 1e3);
    // two switchers of a threshold of three do not open it
    let ct = switch_updates(&u, &[1, 2, 3], &u.weights, &u.a_seeds, false);
    let proto = ReceiveSwitch::new(&u.ctx, u.flooding.clone(), 3);
    let sum = UpdateSum {
        level: u.sum.level(),
        scale: u.sum.scale,
        a_seeds: &u.a_seeds,
    };
    assert!(matches!(
        u.held[0].weighted_shares(&u.ctx, &[1, 2], &u.weights),
        Err(MultipartyError::TooFewParties { .. })
    ));
    assert!(sum_error(&u, &ct) < 1e-6);
    // keys and seeds must pair up, and name dealers of the setup once each
    let keys = u.held[0]
        .weighted_shares(&u.ctx, &[1, 2, 3], &u.weights)
        .unwrap();
    let mask = |p: &ReceiveSwitch| p.flood(sum.level, &mut Prng::from_seed(&[1; 32])).unwrap();
    assert!(matches!(
        proto.share_updates(&keys[..4], &u.receive, &sum, &[0; 32], mask(&proto), false),
        Err(MultipartyError::Shape("one weighted key per update's seed"))
    ));
    let none = UpdateSum {
        a_seeds: &[],
        ..sum
    };
    assert!(matches!(
        proto.share_updates(&[], &u.receive, &none, &[0; 32], mask(&proto), false),
        Err(MultipartyError::Contributions { got: 0, .. })
    ));
    assert!(matches!(
        u.held[0].weighted_shares(&u.ctx, &[1, 2, 3], &[(6, 1)]),
        Err(MultipartyError::NotDealer(6))
    ));
    assert!(matches!(
        u.held[0].weighted_shares(&u.ctx, &[1, 2, 3], &[(2, 1), (2, 1)]),
        Err(MultipartyError::PartyIndex(2))
    ));
    // a mask of another flooding serves no share
    let other = ReceiveSwitch::new(&u.ctx, Flooding::new(31, 100.0).unwrap(), 3);
    assert!(matches!(
        proto.share_updates(&keys, &u.receive, &sum, &[0; 32], mask(&other), false),
        Err(MultipartyError::Shape(_))
    ));
}

#[test]
fn a_threshold_secret_keeps_each_dealers_share_through_its_disk_format() {
    use super::super::wire::{decode_threshold_secret, encode_threshold_secret};
    let u = updates();
    let held = &u.held[1];
    assert_eq!(held.dealers(), &[1, 2, 3, 4, 5]);
    let bytes = encode_threshold_secret(&u.ctx, held);
    let back = decode_threshold_secret(&u.ctx, &bytes).unwrap();
    assert_eq!(back.dealers(), held.dealers());
    assert_eq!(back.raw_poly(), held.raw_poly());
    let w = |t: &ThresholdSecret| {
        t.weighted_shares(&u.ctx, &[1, 2, 4], &u.weights)
            .unwrap()
            .iter()
            .map(|k| k.poly().clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(w(&back), w(held));
    // dealers out of order (or twice), a threshold above the dealers, or a cut: refused
    let header = crate::ckks::wire::HEADER_LEN;
    let first = header + 12;
    let second = first + (bytes.len() - first) / 5;
    let mut swapped = bytes.to_vec();
    swapped[second..second + 4].copy_from_slice(&1u32.to_le_bytes());
    assert!(matches!(
        decode_threshold_secret(&u.ctx, &swapped),
        Err(WireError::PartyIndex(1))
    ));
    let mut high = bytes.to_vec();
    high[header + 4..header + 8].copy_from_slice(&6u32.to_le_bytes());
    assert!(matches!(
        decode_threshold_secret(&u.ctx, &high),
        Err(WireError::Threshold {
            threshold: 6,
            dealers: 5
        })
    ));
    assert!(decode_threshold_secret(&u.ctx, &bytes[..bytes.len() - 1]).is_err());
    // a secret stored by a node before dealers were kept apart is named as such
    let old = bytes[..header + 8 + (bytes.len() - first) / 5 - 4].to_vec();
    assert!(matches!(
        decode_threshold_secret(&u.ctx, &old),
        Err(WireError::OldFormat("threshold secret"))
    ));
}
