//! The participant driven without sockets: each message in, the actions out.

use super::*;

const ME: Membership = Membership {
    index: 2,
    hospitals: 3,
    threshold: 2,
    plaintext: false,
};

fn welcome(phase: Phase) -> Body {
    Body::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: false,
        phase,
    }
}

fn start() -> Body {
    Body::RoundStart { deadline_ms: 1000 }
}

fn result(count: u32) -> Body {
    Body::RoundResult {
        total_weight: 100,
        participants: vec![1, 2, 3],
        count,
    }
}

fn switch(weights: Vec<u64>, active: Vec<u32>) -> Body {
    Body::SwitchRequest {
        attempt: 0,
        active,
        weights,
        count: 4,
    }
}

#[test]
fn hello_names_the_round_held_and_the_update_size() {
    let p = Participant::new(ME, 7, 10);
    assert!(matches!(
        p.hello(),
        Body::Hello {
            last_round: 7,
            items: 10,
            ..
        }
    ));
}

#[test]
fn a_welcome_of_another_federation_or_mode_ends_the_session() {
    let mut p = Participant::new(ME, 0, 10);
    let other = Body::Welcome {
        index: 3,
        hospitals: 3,
        threshold: 2,
        plaintext: false,
        phase: Phase::Setup,
    };
    assert!(matches!(
        p.handle(0, &other),
        Err(ParticipantError::Foreign { index: 3, .. })
    ));
    let plain = Body::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: true,
        phase: Phase::Setup,
    };
    assert_eq!(
        p.handle(0, &plain),
        Err(ParticipantError::Plaintext {
            coordinator: true,
            site: false
        })
    );
    assert_eq!(
        p.handle(0, &welcome(Phase::Setup)),
        Ok(vec![Action::StartSetup])
    );
    assert_eq!(
        p.handle(0, &welcome(Phase::Training { committed: 0 })),
        Ok(vec![])
    );
    assert_eq!(
        p.handle(0, &welcome(Phase::Finished { rounds: 3 })),
        Ok(vec![Action::Finished])
    );
}

#[test]
fn a_plaintext_site_takes_no_key_material() {
    let mut p = Participant::new(
        Membership {
            plaintext: true,
            ..ME
        },
        0,
        10,
    );
    let plain_welcome = Body::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: true,
        phase: Phase::Setup,
    };
    assert_eq!(p.handle(0, &plain_welcome), Ok(vec![]));
    assert_eq!(
        p.handle(
            0,
            &Body::RelayedShares {
                sealed: vec![(1, vec![0; 4])]
            }
        ),
        Err(ParticipantError::NotEncrypted("relayed shares"))
    );
    assert!(matches!(
        p.handle(1, &switch(vec![5], vec![1, 2])),
        Err(ParticipantError::NotEncrypted(_))
    ));
    assert_eq!(p.update_sent(1, 3), vec![]);
}

#[test]
fn rounds_follow_the_model_held() {
    let mut p = Participant::new(ME, 4, 10);
    assert_eq!(p.handle(5, &start()), Ok(vec![Action::Train { round: 5 }]));
    // an old announcement is ignored
    assert_eq!(p.handle(3, &start()), Ok(vec![]));
    // round 6 announced before round 5's result: it waits for the result
    assert_eq!(p.handle(6, &start()), Ok(vec![]));
    // a result for a round not next is drained, not applied
    assert_eq!(p.handle(7, &result(2)), Ok(vec![Action::Drain]));
    assert_eq!(
        p.handle(5, &result(2)),
        Ok(vec![Action::ApplyResult {
            round: 5,
            total_weight: 100,
            participants: vec![1, 2, 3],
            count: 2
        }])
    );
    assert_eq!(p.held(), 4, "held only once applied");
    assert_eq!(p.result_applied(5), vec![Action::Train { round: 6 }]);
    assert_eq!(p.held(), 5);
    // the pending start is used once
    assert_eq!(p.result_applied(5), vec![]);
}

#[test]
fn results_and_switch_requests_are_bounded() {
    let mut p = Participant::new(ME, 0, 10);
    assert_eq!(
        p.handle(1, &result(11)),
        Err(ParticipantError::TooManyItems {
            what: "round result",
            count: 11,
            max: 10
        })
    );
    let zero = Body::RoundResult {
        total_weight: 0,
        participants: vec![1],
        count: 1,
    };
    assert_eq!(p.handle(1, &zero), Err(ParticipantError::NoWeight));
    let big = Body::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        weights: vec![1],
        count: 100_000,
    };
    assert!(matches!(
        p.handle(1, &big),
        Err(ParticipantError::TooManyItems { count: 100_000, .. })
    ));
    assert!(matches!(
        p.handle(1, &switch(vec![], vec![1, 2])),
        Err(ParticipantError::BadSwitchRequest { .. })
    ));
}

fn switch_action(round: u64, prepared: bool) -> Action {
    Action::Switch(SwitchOrder {
        round,
        attempt: 0,
        active: vec![1, 2],
        weights: vec![10, 20],
        count: 4,
        prepared,
    })
}

#[test]
fn masks_made_ahead_serve_only_the_request_they_fit_once() {
    let mut p = Participant::new(ME, 0, 10);
    // no switch served yet: nothing to prepare
    assert_eq!(p.update_sent(1, 4), vec![]);
    assert_eq!(
        p.handle(1, &switch(vec![10, 20], vec![1, 2])),
        Ok(vec![switch_action(1, false)])
    );
    // the next round's masks are made for the same shape…
    let shape = SwitchShape {
        round: 2,
        weights: vec![10, 20],
        parties: 2,
    };
    assert_eq!(
        p.update_sent(2, 4),
        vec![Action::PrepareMasks {
            shape: shape.clone(),
            count: 4
        }]
    );
    // …and used when the request fits
    assert_eq!(
        p.handle(2, &switch(vec![10, 20], vec![1, 2])),
        Ok(vec![switch_action(2, true)])
    );
    // a retry of the same request finds them used
    assert_eq!(
        p.handle(2, &switch(vec![10, 20], vec![1, 2])),
        Ok(vec![switch_action(2, false)])
    );
    // other weights (a hospital dropped out): not used
    assert!(matches!(
        p.update_sent(3, 4)[..],
        [Action::PrepareMasks { .. }]
    ));
    assert!(matches!(
        p.handle(3, &switch(vec![10], vec![1, 2])).unwrap()[..],
        [Action::Switch(SwitchOrder {
            prepared: false,
            ..
        })]
    ));
    // a node that skipped a round's switch prepares nothing for the round after
    assert_eq!(p.update_sent(5, 4), vec![]);
}

#[test]
fn finished_refused_and_unexpected_messages() {
    let mut p = Participant::new(ME, 3, 10);
    assert_eq!(p.handle(3, &Body::Finished), Ok(vec![Action::Finished]));
    assert_eq!(
        p.handle(
            3,
            &Body::Refused {
                reason: "late".into()
            }
        ),
        Ok(vec![])
    );
    assert_eq!(p.handle(3, &p.hello()), Ok(vec![]));
}
