use std::time::{Duration, Instant};

use super::*;

const PLAN: [u8; 32] = [7; 32];

fn engine(n: u32, t: u32) -> ServingEngine {
    ServingEngine::new(ServingConfig {
        hospitals: n,
        threshold: t,
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(10),
        max_in_flight: 2,
        head: false,
    })
}

fn no_audit(actions: Vec<ServingAction>) -> Vec<ServingAction> {
    actions
        .into_iter()
        .filter(|a| !matches!(a, ServingAction::Audit { .. }))
        .collect()
}

/// Connects 1..=n and runs setup to serving.
fn serving(n: u32, t: u32) -> ServingEngine {
    let mut e = engine(n, t);
    for h in 1..=n {
        let a = e.handle(ServingEvent::Joined { hospital: h });
        assert_eq!(a, vec![ServingAction::StartSetup { to: vec![h] }]);
    }
    for h in 1..=n {
        let a = e.handle(ServingEvent::Round1Stored {
            hospital: h,
            plan: PLAN,
        });
        if h < n {
            assert!(a.is_empty());
        } else {
            assert_eq!(
                a,
                vec![ServingAction::SendRound1 {
                    to: (1..=n).collect()
                }]
            );
        }
    }
    assert_eq!(e.step(), SetupStep::Round2);
    for h in 1..=n {
        let a = no_audit(e.handle(ServingEvent::Round2Stored { hospital: h }));
        if h == n {
            assert_eq!(a, vec![ServingAction::MakeKeys]);
        }
    }
    assert_eq!(e.step(), SetupStep::Keys);
    // each keyholder that formed its threshold secret is sent the keys' sums
    for h in 1..=n {
        let a = e.handle(ServingEvent::ThresholdFormed {
            hospital: h,
            keys: false,
        });
        assert_eq!(a, vec![ServingAction::SendKeys { to: vec![h] }]);
    }
    assert!(
        e.accepts_request(0).is_err(),
        "not before every keyholder holds the keys"
    );
    // a keyholder that never formed is not ready whatever it says
    let mut other = engine(n, t);
    other.handle(ServingEvent::Joined { hospital: 1 });
    assert!(no_audit(other.handle(ServingEvent::KeyholderReady { hospital: 1 })).is_empty());
    // serving starts once every keyholder is ready: the setup is saved then, and only then
    for h in 1..=n {
        let a = no_audit(e.handle(ServingEvent::KeyholderReady { hospital: h }));
        if h < n {
            assert!(a.is_empty());
        } else {
            assert_eq!(a, vec![ServingAction::Persist]);
        }
    }
    assert_eq!(e.step(), SetupStep::Serving);
    assert!(
        !e.handle(ServingEvent::KeyholderReady { hospital: 1 })
            .contains(&ServingAction::Persist)
    );
    e
}

/// A keyholder reconnecting with the setup's keys, as its hello says.
fn rejoin(e: &mut ServingEngine, hospital: u32) -> Vec<ServingAction> {
    let mut a = e.handle(ServingEvent::Joined { hospital });
    a.extend(e.handle(ServingEvent::ThresholdFormed {
        hospital,
        keys: true,
    }));
    a
}

fn switch_of(actions: &[ServingAction]) -> (u32, Vec<u32>) {
    actions
        .iter()
        .find_map(|a| match a {
            ServingAction::RequestSwitch {
                attempt, active, ..
            } => Some((*attempt, active.clone())),
            _ => None,
        })
        .expect("a switch request")
}

#[test]
fn setup_then_a_request_is_switched_by_t_hospitals_and_delivered() {
    let now = Instant::now();
    let mut e = serving(5, 3);
    assert!(e.accepts_request(0).is_ok());
    // requests still being read or evaluated count too
    assert!(
        e.accepts_request(2).is_err(),
        "two being read fill the limit of two"
    );
    let a = e.handle(ServingEvent::Ready {
        request: 9,
        requester: 4,
        now,
    });
    let (attempt, active) = switch_of(&a);
    assert_eq!((attempt, active.len()), (0, 3));
    for (i, &h) in active.iter().enumerate() {
        assert!(e.accepts_shares(h, 9, 0).is_ok());
        let a = e.handle(ServingEvent::SharesFolded {
            request: 9,
            attempt: 0,
            hospital: h,
        });
        assert!(e.accepts_shares(h, 9, 0).is_err(), "twice");
        if i + 1 < active.len() {
            assert!(a.is_empty());
        } else {
            assert_eq!(
                a,
                vec![ServingAction::Deliver {
                    request: 9,
                    requester: 4
                }]
            );
        }
    }
    assert!(
        e.accepts_shares(active[0], 9, 0).is_err(),
        "request is over"
    );
}

#[test]
fn a_different_plan_or_late_round1_is_refused() {
    let mut e = engine(3, 2);
    for h in 1..=3 {
        e.handle(ServingEvent::Joined { hospital: h });
    }
    e.handle(ServingEvent::Round1Stored {
        hospital: 1,
        plan: PLAN,
    });
    assert!(e.accepts_round1(2, &[8; 32]).is_err());
    assert!(e.accepts_round1(1, &PLAN).is_err(), "twice");
    assert!(e.accepts_round1(2, &PLAN).is_ok());
    // an event that should have been refused changes nothing
    e.handle(ServingEvent::Round1Stored {
        hospital: 2,
        plan: [8; 32],
    });
    e.handle(ServingEvent::Round1Stored {
        hospital: 3,
        plan: PLAN,
    });
    assert_eq!(e.step(), SetupStep::Round1, "hospital 2 is still missing");
}

#[test]
fn a_switcher_that_leaves_is_replaced_and_too_few_hospitals_time_out() {
    let now = Instant::now();
    let mut e = serving(4, 3);
    assert_eq!(e.next_deadline(), None, "nothing waits on time");
    let a = e.handle(ServingEvent::Ready {
        request: 1,
        requester: 2,
        now,
    });
    // the attempt's clock starts at the next tick, due at once; then the attempt's deadline
    assert_eq!(e.next_deadline(), Some(now));
    assert!(no_audit(e.handle(ServingEvent::Tick { now })).is_empty());
    let first = e.next_deadline().expect("a waiting request has a deadline");
    assert_eq!(first.duration_since(now), Duration::from_secs(10));
    let due = now + Duration::from_secs(30);
    let (_, active) = switch_of(&a);
    e.handle(ServingEvent::SharesFolded {
        request: 1,
        attempt: 0,
        hospital: active[0],
    });
    // one of the others leaves: a new attempt with the three still connected
    let a = e.handle(ServingEvent::Left {
        hospital: active[1],
    });
    let (attempt, again) = switch_of(&a);
    assert_eq!(attempt, 1);
    assert!(!again.contains(&active[1]) && again.len() == 3);
    assert!(e.accepts_shares(active[0], 1, 0).is_err(), "old attempt");
    // another leaves: two connected, fewer than t; the request waits, then is refused
    let a = e.handle(ServingEvent::Left { hospital: again[0] });
    assert!(no_audit(a).is_empty());
    // a hospital returning re-plans with a fresh attempt number
    let a = rejoin(&mut e, again[0]);
    assert_eq!(switch_of(&a).0, 2);
    e.handle(ServingEvent::Left { hospital: again[0] });
    assert!(
        e.handle(ServingEvent::Tick {
            now: due - Duration::from_millis(1)
        })
        .is_empty(),
        "not before its deadline"
    );
    let a = e.handle(ServingEvent::Tick { now: due });
    assert!(matches!(
        a.as_slice(),
        [ServingAction::Refuse { request: 1, .. }]
    ));
    assert_eq!(e.next_deadline(), None, "the refused request waits no more");
}

#[test]
fn a_waiting_request_resumes_when_a_hospital_returns_and_load_is_bounded() {
    let now = Instant::now();
    let mut e = serving(3, 3);
    e.handle(ServingEvent::Left { hospital: 3 });
    let a = e.handle(ServingEvent::Ready {
        request: 5,
        requester: 1,
        now,
    });
    assert!(no_audit(a).is_empty(), "waits for a third hospital");
    let a = rejoin(&mut e, 3);
    let (attempt, active) = switch_of(&a);
    assert_eq!((attempt, active), (0, vec![1, 2, 3]));
    e.handle(ServingEvent::Ready {
        request: 6,
        requester: 1,
        now,
    });
    assert!(e.accepts_request(0).is_err(), "two in flight is the limit");
}

/// Malformed shares from one keyholder: the request goes on with another t without waiting for
/// its deadline; with too few others left it waits for one to connect.
#[test]
fn a_keyholder_with_malformed_shares_is_replaced_for_that_request() {
    let mut e = serving(4, 2);
    let now = Instant::now();
    let a = e.handle(ServingEvent::Ready {
        request: 1,
        requester: 4,
        now,
    });
    let (attempt, active) = switch_of(&a);
    assert_eq!((attempt, active.clone()), (0, vec![1, 2]));
    // shares of another attempt, or of a hospital not asked, change nothing
    let stale = e.handle(ServingEvent::SharesRefused {
        request: 1,
        attempt: 5,
        hospital: 2,
    });
    assert!(stale.is_empty());
    let a = e.handle(ServingEvent::SharesRefused {
        request: 1,
        attempt: 0,
        hospital: 2,
    });
    assert!(a.iter().any(|x| matches!(
        x,
        ServingAction::Audit {
            event: "shares-refused",
            hospital: Some(2),
            ..
        }
    )));
    let (attempt, active) = switch_of(&a);
    assert_eq!((attempt, active), (1, vec![1, 3]));
    // hospital 2 is never asked again for this request, even when 3 and 4 are gone
    e.handle(ServingEvent::SharesRefused {
        request: 1,
        attempt: 1,
        hospital: 3,
    });
    let a = e.handle(ServingEvent::Left { hospital: 4 });
    assert!(
        !a.iter()
            .any(|x| matches!(x, ServingAction::RequestSwitch { .. })),
        "{a:?}"
    );
    // another request still uses hospital 2
    let a = e.handle(ServingEvent::Ready {
        request: 2,
        requester: 1,
        now,
    });
    assert_eq!(switch_of(&a).1, vec![1, 2]);
}

#[test]
fn a_keyholder_back_without_the_keys_is_sent_them_and_asked_only_once_ready() {
    let now = Instant::now();
    let mut e = serving(3, 2);
    e.handle(ServingEvent::Left { hospital: 1 });
    e.handle(ServingEvent::Left { hospital: 2 });
    // restarted: it holds the setup's threshold secret, not the keys
    e.handle(ServingEvent::Joined { hospital: 1 });
    let a = e.handle(ServingEvent::ThresholdFormed {
        hospital: 1,
        keys: false,
    });
    assert!(
        a.contains(&ServingAction::SendKeys { to: vec![1] }),
        "{a:?}"
    );
    let a = e.handle(ServingEvent::Ready {
        request: 3,
        requester: 1,
        now,
    });
    assert!(no_audit(a).is_empty(), "only hospital 3 is ready");
    let a = e.handle(ServingEvent::KeyholderReady { hospital: 1 });
    assert_eq!(switch_of(&a), (0, vec![1, 3]));
}

#[test]
fn head_keyholders_get_the_evaluation_keys_and_serve_once_they_hold_them() {
    // each keyholder replays the steps it refreshes (issue 46, item 3): it needs the keys
    let mut e = ServingEngine::new(ServingConfig {
        hospitals: 2,
        threshold: 2,
        request_timeout: Duration::from_secs(30),
        attempt_timeout: Duration::from_secs(10),
        max_in_flight: 2,
        head: true,
    });
    for h in 1..=2 {
        e.handle(ServingEvent::Joined { hospital: h });
        e.handle(ServingEvent::Round1Stored {
            hospital: h,
            plan: PLAN,
        });
    }
    for h in 1..=2 {
        e.handle(ServingEvent::Round2Stored { hospital: h });
    }
    for h in 1..=2 {
        let a = no_audit(e.handle(ServingEvent::ThresholdFormed {
            hospital: h,
            keys: false,
        }));
        assert!(
            a.iter()
                .any(|x| matches!(x, ServingAction::SendKeys { to } if to == &vec![h])),
            "{a:?}"
        );
    }
    assert_ne!(
        e.step(),
        SetupStep::Serving,
        "no keyholder holds the keys yet"
    );
    for h in 1..=2 {
        e.handle(ServingEvent::KeyholderReady { hospital: h });
    }
    assert_eq!(e.step(), SetupStep::Serving);
}

#[test]
fn a_keyholder_silent_past_the_attempt_timeout_is_left_out_and_others_asked() {
    let now = Instant::now();
    let mut e = serving(3, 2);
    let a = e.handle(ServingEvent::Ready {
        request: 5,
        requester: 3,
        now,
    });
    let (attempt, active) = switch_of(&a);
    assert_eq!((attempt, active.clone()), (0, vec![1, 2]));
    e.handle(ServingEvent::SharesFolded {
        request: 5,
        attempt: 0,
        hospital: 1,
    });
    // hospital 2 hangs: its clock starts at the tick after the switch was asked
    assert!(no_audit(e.handle(ServingEvent::Tick { now })).is_empty());
    let late = now + Duration::from_secs(10);
    assert_eq!(e.next_deadline(), Some(late));
    assert!(
        e.handle(ServingEvent::Tick {
            now: late - Duration::from_millis(1)
        })
        .is_empty()
    );
    let a = e.handle(ServingEvent::Tick { now: late });
    assert!(a.iter().any(|x| matches!(
        x,
        ServingAction::Audit {
            event: "inference-switch-slow",
            ..
        }
    )));
    assert_eq!(
        switch_of(&a),
        (1, vec![1, 3]),
        "1 answered, 2 left out, 3 asked"
    );
    assert!(
        e.accepts_shares(2, 5, 0).is_err(),
        "the hung keyholder's late shares"
    );
    // with no one else ready, a silent keyholder is waited for until the request's timeout
    let mut e = serving(3, 2);
    e.handle(ServingEvent::Left { hospital: 3 });
    e.handle(ServingEvent::Ready {
        request: 6,
        requester: 1,
        now,
    });
    e.handle(ServingEvent::Tick { now });
    assert!(no_audit(e.handle(ServingEvent::Tick { now: late })).is_empty());
    let a = e.handle(ServingEvent::Tick {
        now: now + Duration::from_secs(30),
    });
    assert!(matches!(
        a.as_slice(),
        [ServingAction::Refuse { request: 6, .. }]
    ));
}
