//! The state store's tests: reopening, refusals, the kept results.

use super::*;

#[test]
fn state_survives_reopening_and_refuses_another_federation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fed = FederationId([1; 16]);
    {
        let s = Store::open(&path, fed).unwrap();
        assert_eq!(s.phase().unwrap(), Phase::Setup);
        s.put_party(
            2,
            &PartyRecord {
                exchange_key: Some([9; 32]),
                ..Default::default()
            },
        )
        .unwrap();
        let sealed = |peer, sealed: Vec<u8>| SealedShare {
            peer,
            sealed,
            signature: vec![peer as u8; 3],
        };
        s.put_shamir(2, &[sealed(1, vec![1, 2]), sealed(3, vec![3])])
            .unwrap();
        let rec = RoundRecord {
            round: 1,
            participants: vec![(1, 10), (2, 20)],
            total_weight: 30,
            ..Default::default()
        };
        let res = StoredResult {
            round: 1,
            total_weight: 30,
            participants: vec![1, 2],
            items: vec![vec![7; 5]],
        };
        assert!(s.latest_result().unwrap().is_none());
        s.set_receive_key(&[5; 9]).unwrap();
        s.commit_round(&rec, &res, Phase::Training { committed: 1 }, 2)
            .unwrap();
        s.audit(Some(3), 2, "refused", "update for a past round")
            .unwrap();
    }
    let s = Store::open(&path, fed).unwrap();
    assert_eq!(s.phase().unwrap(), Phase::Training { committed: 1 });
    assert_eq!(s.party(2).unwrap().exchange_key, Some([9; 32]));
    assert!(s.party(2).unwrap().dealt);
    assert_eq!(
        s.shamir_for(3).unwrap(),
        vec![SealedShare {
            peer: 2,
            sealed: vec![3],
            signature: vec![3; 3]
        }]
    );
    assert_eq!(s.rounds().unwrap().len(), 1);
    assert_eq!(s.latest_result().unwrap().unwrap().items, vec![vec![7; 5]]);
    assert_eq!(s.receive_key().unwrap(), Some(vec![5; 9]));
    let log = s.audit_log().unwrap();
    assert_eq!(log.len(), 2);
    assert_eq!(log[1].event, "refused");
    drop(s);
    assert!(matches!(
        Store::open(&path, FederationId([2; 16])),
        Err(StoreError::OtherFederation { .. })
    ));
}

#[test]
fn the_last_rounds_results_are_kept_in_order_and_older_ones_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("state.redb"), FederationId([1; 16])).unwrap();
    assert_eq!(s.results_after(0).unwrap(), None);
    for round in 1..=5u64 {
        let rec = RoundRecord {
            round,
            ..Default::default()
        };
        let res = StoredResult {
            round,
            total_weight: 1,
            participants: vec![1],
            items: vec![vec![round as u8]],
        };
        s.commit_round(&rec, &res, Phase::Training { committed: round }, 3)
            .unwrap();
    }
    let rounds =
        |v: Option<Vec<StoredResult>>| v.map(|v| v.iter().map(|r| r.round).collect::<Vec<_>>());
    assert_eq!(rounds(s.results_after(2).unwrap()), Some(vec![3, 4, 5]));
    assert_eq!(rounds(s.results_after(4).unwrap()), Some(vec![5]));
    assert_eq!(
        s.results_after(1).unwrap(),
        None,
        "round 2's result is gone"
    );
    assert_eq!(s.latest_result().unwrap().unwrap().round, 5);
}

#[test]
fn a_store_of_an_older_schema_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.redb");
    let fed = FederationId([1; 16]);
    drop(Store::open(&path, fed).unwrap());
    {
        // as protocol 5 left it: no schema key
        let db = Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove("schema").unwrap();
        txn.commit().unwrap();
    }
    let err = Store::open(&path, fed).unwrap_err();
    assert_eq!(
        err,
        StoreError::Schema {
            found: 1,
            want: SCHEMA
        }
    );
    assert!(err.to_string().contains("provision a new federation"));
}

/// A store of one committed round at `path`, closed.
fn one_round(path: &std::path::Path, fed: FederationId) {
    let s = Store::open(path, fed).unwrap();
    let rec = RoundRecord {
        round: 1,
        ..Default::default()
    };
    let res = StoredResult {
        round: 1,
        total_weight: 1,
        participants: vec![1],
        items: vec![vec![1; 4096]],
    };
    s.commit_round(&rec, &res, Phase::Training { committed: 1 }, 4)
        .unwrap();
}

#[test]
fn a_truncated_or_overwritten_state_file_is_refused_and_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let fed = FederationId([1; 16]);
    let path = dir.path().join("state.redb");
    one_round(&path, fed);
    let good = std::fs::read(&path).unwrap();
    // cut to half its length (a disk that filled, a copy that stopped)
    std::fs::write(&path, &good[..good.len() / 2]).unwrap();
    let cut = std::fs::read(&path).unwrap();
    let err = Store::open(&path, fed).err();
    assert!(err.is_some(), "a truncated store opened");
    assert!(err.unwrap().to_string().contains("state store"));
    assert_eq!(
        std::fs::read(&path).unwrap(),
        cut,
        "the truncated file was changed"
    );
    // its header overwritten
    let mut bad = good.clone();
    bad[..64].fill(0x5a);
    std::fs::write(&path, &bad).unwrap();
    assert!(
        Store::open(&path, fed).is_err(),
        "a store without its header opened"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bad,
        "the damaged file was changed"
    );
}

#[test]
fn a_flipped_bit_in_the_newest_round_is_refused_and_the_file_left_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let fed = FederationId([1; 16]);
    let path = dir.path().join("state.redb");
    one_round(&path, fed);
    // round 2's result: bytes found nowhere else in the file
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 % 251) as u8 + 3).collect();
    {
        let s = Store::open(&path, fed).unwrap();
        let rec = RoundRecord {
            round: 2,
            ..Default::default()
        };
        let res = StoredResult {
            round: 2,
            total_weight: 1,
            participants: vec![1],
            items: vec![pattern.clone()],
        };
        s.commit_round(&rec, &res, Phase::Training { committed: 2 }, 4)
            .unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes
        .windows(64)
        .position(|w| w == &pattern[1000..1064])
        .expect("the result is in the file");
    bytes[at + 10] ^= 0x04;
    std::fs::write(&path, &bytes).unwrap();
    let err = Store::open(&path, fed).unwrap_err();
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert!(
        err.to_string().contains("restore it from a backup"),
        "{err}"
    );
    // `coordinator status` opens it the same way
    let Err(err) = Store::open_existing(&path) else {
        panic!("a damaged store opened for status");
    };
    assert!(matches!(err, StoreError::Damaged { .. }), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        bytes,
        "the damaged file was changed"
    );
}
