use std::sync::{Arc, OnceLock};

use proptest::prelude::*;

use super::*;
use crate::ckks::{CkksContext, Complex, Parameters};

struct Fixture {
    ctx: Arc<CkksContext>,
    sk: SecretKey,
    pk: PublicKey,
    rlk: RelinearizationKey,
    gks: GaloisKeys,
    ct: Ciphertext,
    seeded: SeededCiphertext,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let params = Parameters::insecure_for_tests(6, &[50, 40, 35], &[55], 3, 30.0).unwrap();
        let ctx = CkksContext::new(params).unwrap();
        let mut kg = ctx.key_generator().unwrap();
        let sk = kg.secret_key();
        let pk = kg.public_key(&sk);
        let rlk = kg.relinearization_key(&sk);
        let gks = kg.galois_keys(&sk, &[1, -1, 3], true);
        let v: Vec<Complex> = (0..ctx.slots())
            .map(|i| Complex::new(i as f64 / 40.0, -0.5))
            .collect();
        let pt = ctx.encode(&v, 3, ctx.default_scale()).unwrap();
        let ct = ctx.pk_encryptor(&pk).unwrap().encrypt(&pt);
        let seeded = ctx.sk_encryptor(&sk).unwrap().encrypt_seeded(&pt);
        Fixture {
            ctx,
            sk,
            pk,
            rlk,
            gks,
            ct,
            seeded,
        }
    })
}

#[test]
fn every_object_round_trips() {
    let f = fixture();
    let c = &f.ctx;
    let bytes = encode_ciphertext(c, &f.ct);
    assert_eq!(bytes.len(), ciphertext_len(c, 3, 1));
    assert_eq!(decode_ciphertext(c, &bytes).unwrap(), f.ct);
    let eval = c.evaluator(Some(&f.rlk), None).unwrap();
    let deg2 = eval.mul(&f.ct, &f.ct).unwrap();
    assert_eq!(
        decode_ciphertext(c, &encode_ciphertext(c, &deg2)).unwrap(),
        deg2
    );
    let bytes = encode_seeded_ciphertext(c, &f.seeded);
    assert_eq!(bytes.len(), seeded_ciphertext_len(c, 3));
    assert_eq!(decode_seeded_ciphertext(c, &bytes).unwrap(), f.seeded);
    assert_eq!(
        decode_public_key(c, &encode_public_key(c, &f.pk)).unwrap(),
        f.pk
    );
    assert_eq!(
        decode_relinearization_key(c, &encode_relinearization_key(c, &f.rlk)).unwrap(),
        f.rlk
    );
    assert_eq!(
        decode_galois_keys(c, &encode_galois_keys(c, &f.gks)).unwrap(),
        f.gks
    );
    let one = f.gks.get(f.gks.elements().next().unwrap()).unwrap();
    assert_eq!(
        &decode_galois_key(c, &encode_galois_key(c, one)).unwrap(),
        one
    );
    let sk = decode_secret_key(c, &encode_secret_key(c, &f.sk)).unwrap();
    assert_eq!(sk.poly(), f.sk.poly());
}

#[test]
fn residues_are_packed_to_their_modulus_width() {
    let f = fixture();
    // three limbs of 50 + 40 + 35 bits for 64 coefficients, two polynomials
    let body = 2 * 64 * (50 + 40 + 35) / 8;
    assert_eq!(
        encode_ciphertext(&f.ctx, &f.ct).len(),
        HEADER_LEN + 10 + body
    );
    // the seeded form halves it
    assert_eq!(
        encode_seeded_ciphertext(&f.ctx, &f.seeded).len(),
        HEADER_LEN + 9 + 32 + body / 2
    );
}

fn set(bytes: &[u8], at: usize, v: u8) -> Vec<u8> {
    let mut b = bytes.to_vec();
    b[at] = v;
    b
}

#[test]
fn each_kind_of_malformed_input_is_refused() {
    let f = fixture();
    let c = &f.ctx;
    let good = encode_ciphertext(c, &f.ct);
    let dec = |b: &[u8]| decode_ciphertext(c, b).unwrap_err();
    assert_eq!(
        dec(&good[..10]),
        WireError::Truncated {
            need: HEADER_LEN,
            got: 10
        }
    );
    assert_eq!(dec(&set(&good, 0, b'X')), WireError::Magic);
    assert_eq!(dec(&set(&good, 4, 9)), WireError::Version(9));
    assert_eq!(dec(&set(&good, 6, 99)), WireError::UnknownKind(99));
    assert_eq!(
        dec(&set(&good, 6, Kind::PublicKey as u8)),
        WireError::WrongKind {
            expected: Kind::Ciphertext,
            found: Kind::PublicKey
        }
    );
    assert_eq!(dec(&set(&good, 7, 1)), WireError::Reserved(1));
    assert_eq!(dec(&set(&good, 20, good[20] ^ 1)), WireError::Fingerprint);
    assert_eq!(
        dec(&set(&good, 40, 0)),
        WireError::Level { level: 0, max: 3 }
    );
    assert_eq!(
        dec(&set(&good, 40, 4)),
        WireError::Level { level: 4, max: 3 }
    );
    assert_eq!(dec(&set(&good, 41, 3)), WireError::Degree(3));
    let mut nan = good.clone();
    nan[42..50].copy_from_slice(&f64::NAN.to_le_bytes());
    assert!(matches!(dec(&nan), WireError::Scale(_)));
    let mut small = good.clone();
    small[42..50].copy_from_slice(&0.5f64.to_le_bytes());
    assert_eq!(dec(&small), WireError::Scale(0.5));
    assert!(matches!(
        dec(&good[..good.len() - 1]),
        WireError::Length { .. }
    ));
    let mut long = good.clone();
    long.push(0);
    assert!(matches!(dec(&long), WireError::Length { .. }));
    // a lower level with the body of a higher one: the size no longer matches
    assert!(matches!(dec(&set(&good, 40, 2)), WireError::Length { .. }));
    // residue all ones: 2^50 − 1 ≥ q_0
    let mut big = good.clone();
    for b in &mut big[50..57] {
        *b = 0xff;
    }
    assert_eq!(
        dec(&big),
        WireError::Residue {
            poly: 0,
            limb: 0,
            index: 0
        }
    );
    // the last residue of the limb (read by the tail loop): bytes 394..400 of the 400 of limb 0
    let mut last = good.clone();
    for b in &mut last[50 + 394..50 + 400] {
        *b = 0xff;
    }
    assert_eq!(
        dec(&last),
        WireError::Residue {
            poly: 0,
            limb: 0,
            index: 63
        }
    );
    // ciphertexts of other parameters
    let other =
        CkksContext::new(Parameters::insecure_for_tests(6, &[50, 40, 36], &[55], 3, 30.0).unwrap())
            .unwrap();
    assert_eq!(
        decode_ciphertext(&other, &good).unwrap_err(),
        WireError::Fingerprint
    );
}

#[test]
fn malformed_keys_are_refused() {
    let f = fixture();
    let c = &f.ctx;
    let one = f.gks.get(f.gks.elements().next().unwrap()).unwrap();
    let good = encode_galois_key(c, one);
    for g in [0u64, 1, 2, 2 * c.n() as u64 + 1] {
        let mut b = good.clone();
        b[40..48].copy_from_slice(&g.to_le_bytes());
        assert_eq!(
            decode_galois_key(c, &b).unwrap_err(),
            WireError::GaloisElement(g)
        );
    }
    assert_eq!(
        decode_galois_key(c, &set(&good, 48, 2)).unwrap_err(),
        WireError::Digits { got: 2, want: 3 }
    );
    let set_bytes = encode_galois_keys(c, &f.gks);
    let mut many = set_bytes.clone();
    many[40..42].copy_from_slice(&5000u16.to_le_bytes());
    assert_eq!(
        decode_galois_keys(c, &many).unwrap_err(),
        WireError::TooManyKeys(5000)
    );
    let mut fewer = set_bytes.clone();
    fewer[40..42].copy_from_slice(&1u16.to_le_bytes());
    assert!(matches!(
        decode_galois_keys(c, &fewer).unwrap_err(),
        WireError::Length { .. }
    ));
    // duplicate element: copy the first key's element into the second's
    let key_len = good.len() - HEADER_LEN;
    let mut dup = set_bytes.clone();
    let first = dup[42..50].to_vec();
    dup[42 + key_len..50 + key_len].copy_from_slice(&first);
    assert!(matches!(
        decode_galois_keys(c, &dup).unwrap_err(),
        WireError::DuplicateGaloisElement(_)
    ));
    let pk = encode_public_key(c, &f.pk);
    assert!(matches!(
        decode_public_key(c, &pk[..pk.len() - 8]).unwrap_err(),
        WireError::Length { .. }
    ));
    assert!(matches!(
        decode_secret_key(c, &pk).unwrap_err(),
        WireError::WrongKind { .. }
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Arbitrary bytes never make a decoder panic.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), kind in 1u8..=7) {
        let f = fixture();
        let c = &f.ctx;
        // give random bytes a valid header half the time, so the body checks are reached
        let mut b = bytes;
        if b.len() >= HEADER_LEN && b[0] % 2 == 0 {
            b[..4].copy_from_slice(&MAGIC);
            b[4..6].copy_from_slice(&VERSION.to_le_bytes());
            b[6] = kind;
            b[7] = 0;
            b[8..40].copy_from_slice(c.fingerprint());
        }
        let _ = decode_ciphertext(c, &b);
        let _ = decode_seeded_ciphertext(c, &b);
        let _ = decode_public_key(c, &b);
        let _ = decode_relinearization_key(c, &b);
        let _ = decode_galois_key(c, &b);
        let _ = decode_galois_keys(c, &b);
        let _ = decode_secret_key(c, &b);
    }

    /// Mutations of valid encodings are either refused or decode to a well-formed object.
    #[test]
    fn mutated_objects_never_panic(pos in any::<prop::sample::Index>(), byte in any::<u8>(), cut in any::<prop::sample::Index>()) {
        let f = fixture();
        let c = &f.ctx;
        for good in [encode_ciphertext(c, &f.ct), encode_seeded_ciphertext(c, &f.seeded), encode_galois_keys(c, &f.gks)] {
            let mut b = good.clone();
            let i = pos.index(b.len());
            b[i] = byte;
            if let Ok(ct) = decode_ciphertext(c, &b) {
                prop_assert!(ct.parts.iter().all(|p| p.limbs() == ct.level()));
            }
            let _ = decode_seeded_ciphertext(c, &b);
            let _ = decode_galois_keys(c, &b);
            let t = cut.index(good.len());
            prop_assert!(decode_ciphertext(c, &good[..t]).is_err() || t == good.len());
        }
    }
}
