//! The round's data without sockets: updates folded and refused, the aggregate closed and
//! switched, the result and record made.

use he_agg::aggregate::{CpuBackend, item_seed};
use he_agg::ckks::SecretKey;
use he_agg::multiparty::threshold::deal;
use he_agg::multiparty::{ReceiveSwitch, ThresholdSecret, UpdateSum};
use he_agg::ring::Prng;
use protocol::FederationId;

use super::*;
use crate::config::FederationConfig;

use crate::config::UNIT_CONFIG as CFG;

fn plain(values: &[f32]) -> Update {
    Update::Plain(vec![values.to_vec()])
}

const MAX_TOTAL: u64 = 1_000;

/// Announces `hospital`'s update (of the size it has) and folds it.
fn put(
    r: &mut Round,
    hospital: u32,
    round: u64,
    he: Option<(&HeSetup, &dyn Backend, usize)>,
    weight: u64,
    update: Update,
) -> Result<(), RoundError> {
    let n = update.len() as u32;
    r.announce(hospital, round, weight, n, n)?;
    r.fold(hospital, round, he, 0, update)
}

#[test]
fn plain_updates_are_summed_with_their_weights() {
    let mut r = Round::new(4, 1_000, MAX_TOTAL);
    r.announce(1, 4, 2, 1, 1).unwrap();
    r.fold(1, 4, None, 10, plain(&[1.0, -1.0, 0.5])).unwrap();
    r.announce(3, 4, 3, 1, 1).unwrap();
    r.fold(3, 4, None, 12, plain(&[2.0, 1.0, 0.0])).unwrap();
    r.add_bytes_down(7);
    let (result, record) = r
        .result(
            4,
            None,
            &[(1, 2), (3, 3)],
            &[],
            &[1, 3],
            (Instant::now(), 2_000),
        )
        .unwrap();
    let sum = protocol::plain::decode_f64s(&result.items[0]).unwrap();
    assert_eq!(sum, vec![8.0, 1.0, 1.0]);
    assert_eq!((result.total_weight, result.participants), (5, vec![1, 3]));
    // down: what was sent while the round ran, and the result for each of its two receivers
    let result_bytes = result.items[0].len() as u64;
    assert_eq!(
        (record.bytes_up, record.bytes_down),
        (22, 7 + 2 * result_bytes)
    );
    assert_eq!(
        (record.started_unix_ms, record.committed_unix_ms),
        (1_000, 2_000)
    );
    assert_eq!(record.receivers, vec![1, 3]);
}

#[test]
fn updates_that_do_not_fit_are_refused_and_leave_the_sums_untouched() {
    let mut r = Round::new(2, 0, MAX_TOTAL);
    assert_eq!(r.announce(1, 2, 0, 1, 1), Err(RoundError::Weight(0)));
    assert_eq!(
        r.announce(1, 2, MAX_WEIGHT + 1, 1, 1),
        Err(RoundError::Weight(MAX_WEIGHT + 1))
    );
    assert_eq!(r.announce(1, 2, 1, 0, 1), Err(RoundError::ItemCount(0)));
    assert_eq!(
        r.announce(1, 2, 1, MAX_ITEMS + 1, 1),
        Err(RoundError::ItemCount(MAX_ITEMS + 1))
    );
    // the federation's size is given, whoever comes first
    assert_eq!(
        r.announce(1, 2, 1, 2, 1),
        Err(RoundError::ItemsDiffer { got: 2, want: 1 })
    );
    assert_eq!(
        r.announce(1, 3, 1, 1, 1),
        Err(RoundError::RoundEnded { got: 3, now: 2 })
    );
    put(&mut r, 1, 2, None, 1, plain(&[1.0, 2.0])).unwrap();
    assert_eq!(
        put(&mut r, 2, 2, None, 1, plain(&[1.0, 2.0, 3.0])),
        Err(RoundError::ValuesDiffer { got: 3, want: 2 })
    );
    assert_eq!(
        put(&mut r, 3, 2, None, 1, Update::Encrypted(vec![])),
        Err(RoundError::ItemCount(0))
    );
    r.announce(4, 2, 1, 1, 1).unwrap();
    assert_eq!(
        r.fold(4, 2, None, 0, Update::Encrypted(vec![])),
        Err(RoundError::Mode)
    );
    assert_eq!(
        r.fold(5, 2, None, 0, plain(&[1.0, 2.0])),
        Err(RoundError::NotAnnounced)
    );
    let (result, _) = r
        .result(2, None, &[(1, 1)], &[], &[1], (Instant::now(), 0))
        .unwrap();
    assert_eq!(
        protocol::plain::decode_f64s(&result.items[0]).unwrap(),
        vec![1.0, 2.0]
    );
}

#[test]
fn one_update_per_hospital_and_the_weights_stay_within_the_plan() {
    let mut r = Round::new(1, 0, MAX_TOTAL);
    // two streams of one hospital: the second is refused before anything of it is read
    r.announce(1, 1, 10, 1, 1).unwrap();
    assert_eq!(r.announce(1, 1, 10, 1, 1), Err(RoundError::Twice(1)));
    r.fold(1, 1, None, 0, plain(&[1.0])).unwrap();
    assert_eq!(r.announce(1, 1, 10, 1, 1), Err(RoundError::Twice(1)));
    assert_eq!(
        r.fold(1, 1, None, 0, plain(&[1.0])),
        Err(RoundError::NotAnnounced),
        "no double fold"
    );
    // a broken stream frees its slot (of this round only)
    r.announce(2, 1, 10, 1, 1).unwrap();
    r.abandon(2, 0);
    assert_eq!(r.announce(2, 1, 10, 1, 1), Err(RoundError::Twice(1)));
    r.abandon(2, 1);
    // self-declared weights cannot exceed what the plan's headroom is proven for,
    // counting those still streaming
    r.announce(2, 1, 500, 1, 1).unwrap();
    assert_eq!(
        r.announce(3, 1, 491, 1, 1),
        Err(RoundError::TotalWeight {
            weight: 491,
            total: 1_001,
            max: MAX_TOTAL
        })
    );
    r.announce(3, 1, 490, 1, 1).unwrap();
    r.fold(2, 1, None, 0, plain(&[2.0])).unwrap();
    r.fold(3, 1, None, 0, plain(&[0.0])).unwrap();
    let (result, _) = r
        .result(
            1,
            None,
            &[(1, 10), (2, 500), (3, 490)],
            &[],
            &[1],
            (Instant::now(), 0),
        )
        .unwrap();
    assert_eq!(
        protocol::plain::decode_f64s(&result.items[0]).unwrap(),
        vec![1010.0],
        "each update once"
    );
}

/// Hospitals 1 and 2's own secrets, and hospital 2's threshold secret holding both (t = 1):
/// it alone can switch their sums.
fn two_hospitals(he: &HeSetup) -> (Vec<SecretKey>, ThresholdSecret) {
    let mut kg = he.ctx.key_generator().unwrap();
    let secrets = vec![kg.secret_key(), kg.secret_key()];
    let mut prng = Prng::from_seed(&[2; 32]);
    let to_2: Vec<_> = secrets
        .iter()
        .zip([1u32, 2])
        .map(|(sk, i)| {
            deal(&he.ctx, sk, i, &[1, 2], 1, &mut prng)
                .unwrap()
                .remove(1)
        })
        .collect();
    let held = ThresholdSecret::combine(&he.ctx, 2, 1, &[1, 2], &to_2).unwrap();
    (secrets, held)
}

/// `values` encrypted under `sk`, decoded as the coordinator folds them, and the statement a
/// hospital signs of them (the signature itself is the server's to check).
fn own_update(
    he: &HeSetup,
    sk: &SecretKey,
    (hospital, weight): (u32, u64),
    values: &[f32],
) -> (Update, Contribution) {
    let (items, a_seed) = he.codec.encrypt(sk, values).unwrap();
    let cts = items
        .iter()
        .enumerate()
        .map(|(k, b)| he.decode_update(k, b, &a_seed).unwrap())
        .collect();
    let signed = Contribution {
        hospital,
        weight,
        count: items.len() as u32,
        items: protocol::transcript::digest_items(items.iter().map(Vec::as_slice)),
        a_seed,
        signature: vec![],
    };
    (Update::Encrypted(cts), signed)
}

#[test]
fn an_encrypted_round_is_aggregated_switched_and_decrypts_to_the_weighted_sum() {
    let cfg = FederationConfig::from_toml(CFG).unwrap();
    let he = crate::he::setup(&cfg, FederationId([7; 16])).unwrap();
    let (secrets, held) = two_hospitals(&he);
    let target_sk = he.ctx.key_generator().unwrap().secret_key();
    let n = 3 * he.ctx.n() / 2;
    let a: Vec<f32> = (0..n).map(|i| (i % 7) as f32 / 10.0).collect();
    let b: Vec<f32> = (0..n).map(|i| -((i % 5) as f32) / 10.0).collect();
    // small weights leave the flooding no room for a rescale; a hospital-sized pair does, and
    // then shares and result come a level lower
    for (wa, wb, level) in [
        (3u64, 5u64, he.plan.level),
        (13_113, 5_300, he.plan.level - 1),
    ] {
        let backend = CpuBackend;
        let ctx = Some((&he, &backend as &dyn Backend, 3));
        let round_of = |with_b: bool| {
            let mut r = Round::new(1, 0, 100_000);
            let (ua, ca) = own_update(&he, &secrets[0], (1, wa), &a);
            put(&mut r, 1, 1, ctx, wa, ua).unwrap();
            r.record_contribution(ca.clone());
            let mut signed = vec![ca];
            if with_b {
                let (ub, cb) = own_update(&he, &secrets[1], (2, wb), &b);
                put(&mut r, 2, 1, ctx, wb, ub).unwrap();
                r.record_contribution(cb.clone());
                signed.push(cb);
            }
            (r, signed)
        };
        let (mut r, signed) = round_of(true);
        assert_eq!(
            put(&mut r, 3, 1, ctx, 1, Update::Plain(vec![vec![0.0]; 2])),
            Err(RoundError::Mode),
            "a plain update in an encrypted round"
        );
        assert_eq!(r.shares_expected(), Err(RoundError::NoAggregate));
        let weights = [(1, wa), (2, wb)];
        // the switchers are named every update folded, or none
        assert_eq!(
            r.close(1, &he, 0, &weights[..1], &[2], Instant::now()),
            Err(RoundError::Contributions {
                named: 1,
                folded: 2
            })
        );
        assert_eq!(
            r.close(1, &he, 0, &[(1, wa), (2, wb + 1)], &[2], Instant::now()),
            Err(RoundError::Unsigned(2))
        );
        // what the switchers are sent: the signed statements, nothing of the sum
        let sent = r.close(1, &he, 0, &weights, &[2], Instant::now()).unwrap();
        assert_eq!(sent, signed);
        assert_eq!(r.share_level(), level, "weights {wa}, {wb}");
        let count = signed[0].count as usize;
        assert_eq!(r.shares_expected(), Ok(count));
        // hospital 2 switches the sum it makes from the signed seeds to the target key
        let wf = [wa as f64, wb as f64];
        let proto = ReceiveSwitch::new(&he.ctx, he.plan.flooding(&wf).unwrap(), 1);
        let mut prng = Prng::from_seed(&[1; 32]);
        // hospital 2's shares, masked for the active set `set`, at the full level or one lower
        let mut shares_for = |set: &[u32], rescale: bool| -> Vec<_> {
            let keys = held.weighted_shares(&he.ctx, &[2], &weights).unwrap();
            (0..count)
                .map(|k| {
                    let digest = transcript::switch_digest(1, &sent, k);
                    let seed = he.crs.receive_switch_seed(&digest, 2, set);
                    let a_seeds: Vec<_> = sent.iter().map(|c| item_seed(&c.a_seed, k)).collect();
                    let sum = UpdateSum {
                        level: he.plan.level,
                        scale: he.plan.scale,
                        a_seeds: &a_seeds,
                    };
                    let mask = proto.flood(he.plan.level, &mut prng).unwrap();
                    proto
                        .share_updates(&keys, &target_sk, &sum, &seed, mask, rescale)
                        .unwrap()
                })
                .collect()
        };
        let rescale = level < he.plan.level;
        let shares = shares_for(&[2], rescale);
        let wrong = shares_for(&[2], !rescale);
        // masked for another set than the request named: the result does not open
        let other_set = shares_for(&[2, 3], rescale);
        assert_eq!(
            r.fold_shares(1, &he, 1, 0, shares.clone()),
            Err(RoundError::AttemptChanged)
        );
        assert_eq!(
            r.fold_shares(1, &he, 0, 0, shares[1..].to_vec()),
            Err(RoundError::ShareCount {
                got: count - 1,
                want: count
            })
        );
        assert!(matches!(
            r.fold_shares(1, &he, 0, 0, wrong),
            Err(RoundError::Aggregation(_))
        ));
        let (mut other, _) = round_of(true);
        other
            .close(1, &he, 0, &weights, &[2], Instant::now())
            .unwrap();
        other.fold_shares(1, &he, 0, 0, other_set).unwrap();
        let (bad, _) = other
            .result(1, Some(&he), &weights, &[2], &[1, 2], (Instant::now(), 9))
            .unwrap();
        assert!(he.codec.decrypt_sum(&target_sk, &bad.items, n).unwrap()[0].abs() > 1e6);
        r.fold_shares(1, &he, 0, 0, shares).unwrap();
        let (result, record) = r
            .result(1, Some(&he), &weights, &[2], &[1, 2], (Instant::now(), 9))
            .unwrap();
        assert_eq!(record.switchers, vec![2]);
        // the result travels as c0 and seeds: half a ciphertext of its level, sent to each
        // receiver
        let half = he_agg::ckks::wire::ciphertext_len(&he.ctx, level, 1) / 2;
        assert!(
            result.items[0].len() < half + 96,
            "{} bytes",
            result.items[0].len()
        );
        let result_bytes: usize = result.items.iter().map(Vec::len).sum();
        assert_eq!(record.bytes_down, 2 * result_bytes as u64);
        let sum = he.codec.decrypt_sum(&target_sk, &result.items, n).unwrap();
        let worst = sum
            .iter()
            .zip(a.iter().zip(&b))
            .map(|(s, (x, y))| {
                (s - (wa as f64 * f64::from(*x) + wb as f64 * f64::from(*y))).abs()
                    / (wa + wb) as f64
            })
            .fold(0.0, f64::max);
        assert!(worst < 1e-6, "weights {wa}, {wb}: average off by {worst}");
    }
}

#[test]
fn a_switch_without_every_share_gives_no_result() {
    let cfg = FederationConfig::from_toml(CFG).unwrap();
    let he = crate::he::setup(&cfg, FederationId([8; 16])).unwrap();
    let (secrets, _) = two_hospitals(&he);
    let (update, signed) = own_update(&he, &secrets[0], (1, 1), &[0.5; 10]);
    let mut r = Round::new(1, 0, MAX_TOTAL);
    let backend = CpuBackend;
    put(&mut r, 1, 1, Some((&he, &backend, 3)), 1, update).unwrap();
    // an update folded without its signed statement cannot be switched
    assert_eq!(
        r.close(1, &he, 0, &[(1, 1)], &[1], Instant::now()),
        Err(RoundError::Unsigned(1))
    );
    r.record_contribution(signed);
    r.close(1, &he, 0, &[(1, 1)], &[1], Instant::now()).unwrap();
    assert!(matches!(
        r.result(1, Some(&he), &[(1, 1)], &[], &[1], (Instant::now(), 0)),
        Err(RoundError::MissingShares { got: 0, .. })
    ));
    assert_eq!(
        r.close(2, &he, 1, &[(1, 1)], &[1], Instant::now()),
        Err(RoundError::RoundEnded { got: 2, now: 1 })
    );
}
