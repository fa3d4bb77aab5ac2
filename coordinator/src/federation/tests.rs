//! One round walked through the federation state machine without sockets: each update
//! announced then handed over whole, the commit coming out with the sum, refusals leaving the
//! sums untouched.

use std::time::Duration;

use he_agg::aggregate::CpuBackend;

use super::*;

fn plaintext(hospitals: u32, rounds: u64) -> Federation {
    with_quorum(hospitals, hospitals, rounds)
}

fn with_quorum(hospitals: u32, quorum: u32, rounds: u64) -> Federation {
    let cfg = EngineConfig {
        hospitals,
        threshold: hospitals,
        rounds,
        min_hospitals: quorum,
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
    polled(f);
}

fn upload(
    f: &mut Federation,
    hospital: u32,
    weight: u64,
    values: &[f32],
) -> Result<Vec<Action>, String> {
    f.announce_update(hospital, 1, weight, 1, 0)?;
    let update = Update::Plain(vec![values.to_vec()]);
    f.update_read(Instant::now(), 5, 1, signed(hospital, weight), update, 8)?;
    Ok(polled(f))
}

/// What the federation decided, polled out.
fn polled(f: &mut Federation) -> Vec<Action> {
    std::iter::from_fn(|| f.poll_action()).collect()
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
    f.handle(now, 6, Event::Committed { round: 1, now });
    let done = polled(&mut f);
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

#[test]
fn time_alone_closes_a_round_at_its_deadline_and_audits_a_stall_once_a_minute() {
    let timeout = Duration::from_secs(60);
    // three hospitals, a quorum of two: the round waits for the third until its deadline
    let made = Instant::now();
    let mut f = with_quorum(3, 2, 2);
    join(&mut f, 3, Instant::now());
    let deadline = f.poll_timeout().expect("a collecting round has a deadline");
    assert!(deadline >= made + timeout && deadline <= Instant::now() + timeout);
    upload(&mut f, 1, 1, &[1.0]).unwrap();
    upload(&mut f, 2, 1, &[3.0]).unwrap();
    // before it, time changes nothing
    f.handle_timeout(deadline - Duration::from_secs(1), 0);
    assert_eq!(polled(&mut f), vec![]);
    f.handle_timeout(deadline, 7);
    let closed = polled(&mut f);
    assert!(
        closed
            .iter()
            .any(|a| matches!(a, Action::Commit { round: 1, .. })),
        "{closed:?}"
    );
    assert_eq!(
        f.poll_timeout(),
        None,
        "no deadline while the result is delivered"
    );
    f.handle(
        deadline,
        8,
        Event::Committed {
            round: 1,
            now: deadline,
        },
    );
    polled(&mut f);
    // round 2 with one update, below the quorum: audited at its deadline, then once a minute
    let second = f.poll_timeout().expect("round 2's deadline");
    assert_eq!(second, deadline + timeout);
    f.announce_update(1, 2, 1, 1, 0).unwrap();
    f.update_read(
        second,
        9,
        2,
        signed(1, 1),
        Update::Plain(vec![vec![1.0]]),
        8,
    )
    .unwrap();
    polled(&mut f);
    f.handle_timeout(second, 10);
    let stalled = polled(&mut f);
    assert!(
        matches!(
            stalled.as_slice(),
            [Action::Audit {
                event: "quorum-missing",
                ..
            }]
        ),
        "{stalled:?}"
    );
    assert_eq!(f.poll_timeout(), Some(second + QUORUM_AUDIT_EVERY));
}
