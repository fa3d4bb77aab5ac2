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
