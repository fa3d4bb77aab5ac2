//! One round walked through the federation state machine without sockets: each update
//! announced then handed over whole, the commit coming out with the sum, refusals leaving the
//! sums untouched.

use std::time::Duration;

use he_agg::aggregate::CpuBackend;

use super::*;

fn plaintext(hospitals: u32, rounds: u64) -> Federation {
    let cfg = EngineConfig {
        hospitals,
        threshold: hospitals,
        rounds,
        min_hospitals: hospitals,
        plaintext: true,
        round_timeout: Duration::from_secs(60),
        keep_results: 1,
    };
    Federation::new(
        cfg,
        Restored::default(),
        Instant::now(),
        None,
        Box::new(CpuBackend),
        1_000,
    )
}

fn signed(hospital: u32, weight: u64) -> Contribution {
    Contribution::new(hospital, weight, 1, [0; 32], [0; 32])
}

/// Hospitals 1..=n join with updates of one item.
fn join(f: &mut Federation, n: u32, now: Instant) {
    for h in 1..=n {
        let event = Event::Joined {
            hospital: h,
            last_round: 0,
            items: 1,
            now,
        };
        f.handle(now, 0, event);
    }
}

fn upload(
    f: &mut Federation,
    hospital: u32,
    weight: u64,
    values: &[f32],
) -> Result<Vec<Action>, String> {
    f.announce_update(hospital, 1, weight, 1, 0)?;
    let update = Update::Plain(vec![values.to_vec()]);
    f.update_read(Instant::now(), 5, 1, signed(hospital, weight), update, 8)
}

#[test]
fn a_plaintext_round_walks_from_two_updates_to_its_commit() {
    let mut f = plaintext(2, 1);
    let now = Instant::now();
    join(&mut f, 2, now);
    let first = upload(&mut f, 1, 2, &[1.0, -1.0]).unwrap();
    assert!(!first.iter().any(|a| matches!(a, Action::Commit { .. })));
    // a second stream of the same hospital is refused at its header
    assert!(f.announce_update(1, 1, 2, 1, 0).is_err());
    // a round that is not running, an update of the wrong size
    assert!(f.announce_update(2, 2, 3, 1, 0).is_err());
    assert!(f.announce_update(2, 1, 3, 2, 0).is_err());
    let last = upload(&mut f, 2, 3, &[2.0, 1.0]).unwrap();
    let commit = last.iter().find_map(|a| match a {
        Action::Commit {
            round,
            phase,
            result,
            record,
            targets,
        } => Some((
            *round,
            *phase,
            result.clone(),
            record.clone(),
            targets.clone(),
        )),
        _ => None,
    });
    let (round, phase, result, record, targets) = commit.expect("the round commits");
    assert_eq!((round, phase), (1, Phase::Finished { rounds: 1 }));
    let sum = protocol::plain::decode_f64s(&result.items[0]).unwrap();
    assert_eq!(sum, vec![8.0, 1.0]);
    assert_eq!(
        (result.total_weight, &result.participants),
        (5, &vec![1, 2])
    );
    assert_eq!(record.participants, vec![(1, 2), (2, 3)]);
    assert_eq!(record.bytes_up, 16);
    assert_eq!(record.committed_unix_ms, 5);
    assert_eq!(targets, vec![1, 2]);
    // collection closed: a late update is refused and its slot is not held
    assert!(upload(&mut f, 1, 1, &[9.0, 9.0]).is_err());
    let done = f.handle(now, 6, Event::Committed { round: 1, now });
    assert!(done.iter().any(|a| matches!(a, Action::Finish { .. })));
    assert!(f.is_finished());
}

#[test]
fn a_refused_update_leaves_the_round_as_it_was() {
    let mut f = plaintext(2, 1);
    let now = Instant::now();
    join(&mut f, 2, now);
    upload(&mut f, 1, 2, &[1.0, 1.0]).unwrap();
    // hospital 2's values do not match the round's: refused, and its slot is free again
    assert!(upload(&mut f, 2, 3, &[1.0]).is_err());
    let last = upload(&mut f, 2, 3, &[1.0, 0.0]).unwrap();
    let Some(Action::Commit { result, .. }) =
        last.iter().find(|a| matches!(a, Action::Commit { .. }))
    else {
        panic!("the round commits: {last:?}");
    };
    let sum = protocol::plain::decode_f64s(&result.items[0]).unwrap();
    assert_eq!(sum, vec![5.0, 2.0]);
    // switching shares in a plaintext federation are refused
    assert!(f.announce_shares(1, 1, 0, 1).is_err());
}
