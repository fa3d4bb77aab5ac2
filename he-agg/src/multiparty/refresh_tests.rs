//! The collective refresh against plaintext, against its noise bound, at t of N, and on bad
//! input.

use super::*;
use crate::multiparty::refresh::MASK_SECURITY;

/// N = 2^10 (insecure, for speed), Q = 4 × 60 + 2 × 50 bits: a ciphertext at scale 2^70 is
/// refreshed from level 4 (240 bits hold 128-bit masks over a 70-bit message) to level 6.
fn refresh_ctx() -> Arc<CkksContext> {
    CkksContext::new(
        Parameters::insecure_for_tests(10, &[60, 60, 60, 60, 50, 50], &[61], 6, 40.0).unwrap(),
    )
    .unwrap()
}

const SCALE: f64 = 1180591620717411303424.0; // 2^70

fn refresh_with(
    proto: &Refresh,
    keys: &[SecretKey],
    prngs: &mut [Prng],
    ct: &Ciphertext,
) -> Ciphertext {
    let mut acc: Option<RefreshShare> = None;
    for (sk, p) in keys.iter().zip(prngs.iter_mut()) {
        let s = proto.share(sk, ct, p).unwrap();
        // every share crosses the wire
        let ctx = refresh_ctx_cached();
        let s = decode_refresh_share(&ctx, &encode_refresh_share(&ctx, &s)).unwrap();
        match acc.as_mut() {
            None => acc = Some(s),
            Some(a) => proto.aggregate(a, &s).unwrap(),
        }
    }
    proto.finalize(ct, &acc.unwrap()).unwrap()
}

fn refresh_ctx_cached() -> Arc<CkksContext> {
    use std::sync::OnceLock;
    static CTX: OnceLock<Arc<CkksContext>> = OnceLock::new();
    CTX.get_or_init(refresh_ctx).clone()
}

#[test]
fn a_refreshed_ciphertext_decrypts_to_the_same_values_at_the_top_level_and_computes_on() {
    let ctx = refresh_ctx_cached();
    let parties = 3;
    let mut c = Consortium::new(&ctx, parties);
    let pk = c.public_key();
    let rlk = c.relinearization_key();
    let s = c.collective_secret();
    let dec = ctx.decryptor(&s).unwrap();
    let flooding = Flooding::new(
        DEFAULT_STATISTICAL_SECURITY,
        fresh_noise_bound(&ctx, parties),
    )
    .unwrap();
    let proto = Refresh::new(&ctx, &c.crs, flooding, parties, 1.0).unwrap();
    assert_eq!(proto.min_level(SCALE).unwrap(), 4);
    let room = proto.room(4, SCALE).unwrap();
    assert_eq!(room.mask_bits, MASK_SECURITY + 70);

    let x = values(11, ctx.slots());
    let ct = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&x, 4, SCALE).unwrap());
    let out = refresh_with(&proto, &c.secrets, &mut c.prngs, &ct);
    assert_eq!(out.level(), ctx.max_level());
    assert_eq!(out.scale, ct.scale);
    let got = ctx.decode(&dec.decrypt(&out)).unwrap();
    let err = max_err(&x, &got);
    // flooding of 2^40 over the fresh noise bound, 3 shares, N = 1024: σ ≈ 6e-5 per slot, and
    // the largest of 512 complex slots lies near 3.5σ
    let sigma = room.slot_error;
    assert!(
        (0.5 * sigma..6.0 * sigma).contains(&err),
        "refresh error {err}, expected σ ≈ {sigma}"
    );

    // the refreshed ciphertext is an ordinary one: a product and a rescale from the top level
    let eval = ctx.evaluator(Some(&rlk), None).unwrap();
    let sq = eval.rescale(&eval.mul_relin(&out, &out).unwrap()).unwrap();
    let want: Vec<Complex> = x.iter().map(|z| *z * *z).collect();
    let e = max_err(&want, &ctx.decode(&dec.decrypt(&sq)).unwrap());
    assert!(e < 12.0 * sigma, "product after refresh: error {e}");

    // the same input always gets the same common polynomial, another input another one
    let again = refresh_with(&proto, &c.secrets, &mut c.prngs, &ct);
    assert_eq!(again.parts[1], out.parts[1]);
    assert_ne!(
        again.parts[0], out.parts[0],
        "fresh masks and noise every time"
    );
    let other = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&x, 4, SCALE).unwrap());
    assert_ne!(
        refresh_with(&proto, &c.secrets, &mut c.prngs, &other).parts[1],
        out.parts[1]
    );
}

#[test]
fn the_refresh_error_has_the_variance_of_its_flooding() {
    let ctx = refresh_ctx_cached();
    let parties = 4;
    let mut c = Consortium::new(&ctx, parties);
    let pk = c.public_key();
    let s = c.collective_secret();
    // flooding far above every other noise, so the error is the flooding alone
    let flooding = Flooding::new(40, 2f64.powi(20)).unwrap();
    let proto = Refresh::new(&ctx, &c.crs, flooding.clone(), parties, 1.0).unwrap();
    let zero = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&[], 5, SCALE).unwrap());
    let out = refresh_with(&proto, &c.secrets, &mut c.prngs, &zero);
    let coeffs = ctx.lift_coefficients(&ctx.decryptor(&s).unwrap().decrypt(&out));
    let var = coeffs.iter().map(|x| x * x).sum::<f64>() / coeffs.len() as f64;
    let ratio = var / (parties as f64 * flooding.sigma().powi(2));
    // 1024 samples: relative standard error √(2/1024) ≈ 4.4%
    assert!((0.85..1.15).contains(&ratio), "variance ratio {ratio}");
}

#[test]
fn any_t_of_n_refresh_and_t_minus_1_cannot() {
    let ctx = refresh_ctx_cached();
    let (parties, t) = (5usize, 3usize);
    let mut c = Consortium::new(&ctx, parties);
    let pk = c.public_key();
    let s = c.collective_secret();
    let dec = ctx.decryptor(&s).unwrap();
    let secrets = threshold_secrets(&mut c, t);
    let x = values(12, ctx.slots());
    let ct = ctx
        .pk_encryptor(&pk)
        .unwrap()
        .encrypt(&ctx.encode(&x, 4, SCALE).unwrap());
    let flooding = Flooding::new(30, fresh_noise_bound(&ctx, parties)).unwrap();
    for active in [[1u32, 2, 3], [2, 4, 5], [5, 1, 3]] {
        let proto = Refresh::new(&ctx, &c.crs, flooding.clone(), t, 1.0).unwrap();
        let keys: Vec<SecretKey> = active
            .iter()
            .map(|&i| {
                secrets[i as usize - 1]
                    .additive_share(&ctx, &active)
                    .unwrap()
            })
            .collect();
        let mut prngs: Vec<Prng> = active
            .iter()
            .map(|&i| Prng::from_seed(&[i as u8 + 40; 32]))
            .collect();
        let out = refresh_with(&proto, &keys, &mut prngs, &ct);
        let e = max_err(&x, &ctx.decode(&dec.decrypt(&out)).unwrap());
        assert!(e < 1e-4, "parties {active:?}: error {e}");
    }
    // two of them, with the Lagrange coefficients of a set of three: not the key
    let active = [1u32, 2, 3];
    let proto = Refresh::new(&ctx, &c.crs, flooding, t - 1, 1.0).unwrap();
    let keys: Vec<SecretKey> = active[..2]
        .iter()
        .map(|&i| {
            secrets[i as usize - 1]
                .additive_share(&ctx, &active)
                .unwrap()
        })
        .collect();
    let mut prng = Prng::from_seed(&[60; 32]);
    let mut acc = proto.share(&keys[0], &ct, &mut prng).unwrap();
    proto
        .aggregate(&mut acc, &proto.share(&keys[1], &ct, &mut prng).unwrap())
        .unwrap();
    // their masked sum is not the values under masks (s·c1 is left in it, uniform mod q): it
    // is refused, not refreshed into garbage
    assert!(matches!(
        proto.finalize(&ct, &acc),
        Err(MultipartyError::RefreshRange { .. })
    ));
}

#[test]
fn a_refresh_without_room_or_with_mismatched_shares_is_refused() {
    let ctx = refresh_ctx_cached();
    let mut c = Consortium::new(&ctx, 3);
    let pk = c.public_key();
    let flooding = Flooding::new(30, fresh_noise_bound(&ctx, 3)).unwrap();
    let proto = Refresh::new(&ctx, &c.crs, flooding.clone(), 3, 1.0).unwrap();
    let enc = |level: usize| {
        ctx.pk_encryptor(&pk)
            .unwrap()
            .encrypt(&ctx.encode(&values(3, 8), level, SCALE).unwrap())
    };
    // three 60-bit limbs cannot hold 198-bit masks: refused with the numbers
    let low = enc(3);
    match proto.share(&c.secrets[0], &low, &mut c.prngs[0]) {
        Err(
            e @ MultipartyError::RefreshRoom {
                level: 3,
                mask_bits: 198,
                ..
            },
        ) => {
            let msg = e.to_string();
            assert!(msg.contains("198 bits") && msg.contains("level 3"), "{msg}");
        }
        other => panic!("expected RefreshRoom, got {other:?}"),
    }
    // values larger than the declared bound are a configuration error up front
    assert!(matches!(
        Refresh::new(&ctx, &c.crs, flooding.clone(), 3, f64::INFINITY),
        Err(MultipartyError::ValueBound(_))
    ));
    assert!(Refresh::new(&ctx, &c.crs, flooding.clone(), 0, 1.0).is_err());
    // a bound so large that no level holds the masks
    let wide = Refresh::new(&ctx, &c.crs, flooding, 3, 2f64.powi(60)).unwrap();
    assert!(matches!(
        wide.min_level(SCALE),
        Err(MultipartyError::RefreshRoom { .. })
    ));

    // shares for different levels do not add up, nor finalize another ciphertext's level
    let (a, b) = (enc(4), enc(5));
    let mut sa = proto.share(&c.secrets[0], &a, &mut c.prngs[0]).unwrap();
    let sb = proto.share(&c.secrets[1], &b, &mut c.prngs[1]).unwrap();
    assert_eq!(
        proto.aggregate(&mut sa, &sb),
        Err(MultipartyError::Shape("refresh share"))
    );
    assert!(matches!(
        proto.finalize(&b, &sa),
        Err(MultipartyError::Shape(_))
    ));
    // a key of other parameters
    let other = small_ctx();
    let foreign = other.key_generator().unwrap().secret_key();
    assert!(matches!(
        proto.share(&foreign, &a, &mut c.prngs[0]),
        Err(MultipartyError::Foreign { .. })
    ));
    // a share decoded against the wrong level is refused by its size
    let mut bytes = encode_refresh_share(&ctx, &sa);
    bytes[crate::ckks::wire::HEADER_LEN] = 5;
    assert!(decode_refresh_share(&ctx, &bytes).is_err());
    bytes.truncate(bytes.len() - 1);
    assert!(decode_refresh_share(&ctx, &bytes).is_err());
}
