//! Every decoder of the wire format (ciphertexts, keys, protocol shares, the threshold secret a
//! node reads from disk) on arbitrary bytes: it must return a value or an error,
//! never panic, hang or allocate without bound.
//!
//!     cd he-agg/fuzz && cargo +nightly fuzz run wire_decode -- -max_total_time=300
#![no_main]

use std::sync::{Arc, OnceLock};

use he_agg::ckks::{CkksContext, Parameters, wire};
use he_agg::multiparty::wire as shares;
use libfuzzer_sys::fuzz_target;

fn ctx() -> &'static Arc<CkksContext> {
    static CTX: OnceLock<Arc<CkksContext>> = OnceLock::new();
    // small insecure parameters keep each run fast; the decoders' logic is the same for all
    CTX.get_or_init(|| {
        CkksContext::new(Parameters::insecure_for_tests(5, &[50, 40, 35], &[55], 3, 30.0).expect("params"))
            .expect("context")
    })
}

fuzz_target!(|data: &[u8]| {
    let c = ctx();
    // the first byte picks a header, so the body checks are reached often
    let mut bytes = data.to_vec();
    if let Some(&kind) = data.first() {
        if kind & 0x80 != 0 && bytes.len() >= wire::HEADER_LEN {
            bytes[..4].copy_from_slice(&wire::MAGIC);
            bytes[4..6].copy_from_slice(&wire::VERSION.to_le_bytes());
            bytes[6] = 1 + kind % 19;
            bytes[7] = 0;
            bytes[8..40].copy_from_slice(c.fingerprint());
        }
    }
    if let Ok(ct) = wire::decode_ciphertext(c, &bytes) {
        // a decoded ciphertext re-encodes to the same bytes
        assert_eq!(wire::encode_ciphertext(c, &ct), bytes);
    }
    let _ = wire::decode_seeded_ciphertext(c, &bytes);
    if let Ok(u) = wire::decode_seeded_update(c, &bytes) {
        assert_eq!(wire::encode_seeded_update(c, &u), bytes);
    }
    let _ = wire::decode_public_key(c, &bytes);
    let _ = wire::decode_relinearization_key(c, &bytes);
    let _ = wire::decode_galois_key(c, &bytes);
    let _ = wire::decode_galois_keys(c, &bytes);
    let _ = wire::decode_secret_key(c, &bytes);
    let _ = shares::decode_public_key_share(c, &bytes);
    let _ = shares::decode_relin_share1(c, &bytes);
    let _ = shares::decode_relin_share2(c, &bytes);
    let _ = shares::decode_galois_share(c, &bytes);
    let _ = shares::decode_key_switch_share(c, &bytes);
    let _ = shares::decode_public_key_switch_share(c, &bytes);
    let _ = shares::decode_shamir_share(c, &bytes);
    if let Ok(s) = shares::decode_switch_input(c, &bytes) {
        assert_eq!(shares::encode_switch_input(c, &s), bytes);
    }
    if let Ok(r) = shares::decode_switched_result(c, &bytes) {
        assert_eq!(shares::encode_switched_result(c, &r), bytes);
        // its c1 expands from the seeds it carries, whatever they are
        r.expand(c).expect("a decoded result expands");
    }
    if let Ok(r) = shares::decode_refresh_share(c, &bytes) {
        assert_eq!(shares::encode_refresh_share(c, &r), bytes);
    }
    if let Ok(t) = shares::decode_threshold_secret(c, &bytes) {
        // a decoded threshold secret re-encodes to the same bytes
        assert_eq!(shares::encode_threshold_secret(c, &t).as_slice(), bytes.as_slice());
    }
});
