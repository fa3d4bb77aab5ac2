//! The participant driven without sockets: each message in, the actions out.

use super::*;
use protocol::FederationMsg;

const ME: Membership = Membership {
    index: 2,
    hospitals: 3,
    threshold: 2,
    plaintext: false,
};

fn welcome(phase: Phase) -> Body {
    Body::Federation(FederationMsg::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: false,
        phase,
    })
}

fn sealed_from(peer: u32) -> SealedShare {
    SealedShare {
        peer,
        sealed: vec![0; 4],
        signature: vec![1; 8],
    }
}

fn keys_of(hospital: u32) -> PartyKeys {
    PartyKeys {
        hospital,
        public_key_share: vec![hospital as u8; 4],
        exchange_key: [hospital as u8; 32],
        certificate: vec![],
        signature: vec![],
    }
}

fn start() -> Body {
    Body::Federation(FederationMsg::RoundStart { deadline_ms: 1000 })
}

fn result(count: u32) -> Body {
    Body::Federation(FederationMsg::RoundResult {
        total_weight: 100,
        participants: vec![1, 2, 3],
        count,
    })
}

/// The signed update of hospital `hospital` of weight `weight` (4 items), as a switcher sees it.
fn contribution(hospital: u32, weight: u64) -> Contribution {
    Contribution {
        hospital,
        weight,
        count: 4,
        items: [hospital as u8; 32],
        a_seed: [weight as u8; 32],
        signature: vec![7; 70],
    }
}

/// A switch request over the updates of hospitals 1, 2, … with `weights`.
fn switch(weights: Vec<u64>, active: Vec<u32>) -> Body {
    Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active,
        contributions: contributions(&weights),
        count: 4,
    })
}

fn contributions(weights: &[u64]) -> Vec<Contribution> {
    (1..)
        .zip(weights)
        .map(|(h, &w)| contribution(h, w))
        .collect()
}

#[test]
fn hello_names_the_round_held_and_the_update_size() {
    let p = Participant::new(ME, 7, 10);
    assert!(matches!(
        p.hello(),
        Body::Federation(FederationMsg::Hello {
            last_round: 7,
            items: 10,
            ..
        })
    ));
}

#[test]
fn a_welcome_of_another_federation_or_mode_ends_the_session() {
    let mut p = Participant::new(ME, 0, 10);
    let other = Body::Federation(FederationMsg::Welcome {
        index: 3,
        hospitals: 3,
        threshold: 2,
        plaintext: false,
        phase: Phase::Setup,
    });
    assert!(matches!(
        p.handle(0, &other),
        Err(ParticipantError::Foreign { index: 3, .. })
    ));
    let plain = Body::Federation(FederationMsg::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: true,
        phase: Phase::Setup,
    });
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
    let plain_welcome = Body::Federation(FederationMsg::Welcome {
        index: 2,
        hospitals: 3,
        threshold: 2,
        plaintext: true,
        phase: Phase::Setup,
    });
    assert_eq!(p.handle(0, &plain_welcome), Ok(vec![]));
    assert_eq!(
        p.handle(
            0,
            &Body::Federation(FederationMsg::RelayedShares {
                sealed: vec![sealed_from(1)]
            })
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
    assert_eq!(
        p.handle(5, &start()),
        Ok(vec![Action::Train {
            round: 5,
            clip: 64.0
        }])
    );
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
            count: 2,
            clip: 64.0
        }])
    );
    assert_eq!(p.held(), 4, "held only once applied");
    assert_eq!(
        p.result_applied(5),
        Ok(vec![Action::Train {
            round: 6,
            clip: 64.0
        }])
    );
    assert_eq!(p.held(), 5);
    // the pending start is used once
    assert_eq!(p.result_applied(5), Ok(vec![]));
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
    let zero = Body::Federation(FederationMsg::RoundResult {
        total_weight: 0,
        participants: vec![1],
        count: 1,
    });
    assert_eq!(p.handle(1, &zero), Err(ParticipantError::NoWeight));
    let big = Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        contributions: contributions(&[1, 1]),
        count: 100_000,
    });
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
        contributions: contributions(&[10, 20]),
        count: 4,
        prepared,
    })
}

fn record(round: u64) -> Action {
    Action::RecordSwitch(SwitchRecord {
        round,
        sum: vec![(1, 10), (2, 20)],
    })
}

#[test]
fn masks_made_ahead_serve_only_the_request_they_fit_once() {
    let mut p = Participant::new(ME, 0, 10);
    // no switch served yet: nothing to prepare
    assert_eq!(p.update_sent(1, 4), vec![]);
    assert_eq!(
        p.handle(1, &switch(vec![10, 20], vec![1, 2])),
        Ok(vec![record(1), switch_action(1, false)])
    );
    assert_eq!(p.result_applied(1), Ok(vec![]));
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
        Ok(vec![record(2), switch_action(2, true)])
    );
    // a retry of the same request finds them used
    assert_eq!(
        p.handle(2, &switch(vec![10, 20], vec![1, 2])),
        Ok(vec![switch_action(2, false)])
    );
    assert_eq!(p.result_applied(2), Ok(vec![]));
    // other weights (another hospital's update instead of one): not used
    assert!(matches!(
        p.update_sent(3, 4)[..],
        [Action::PrepareMasks { .. }]
    ));
    assert!(matches!(
        p.handle(3, &switch(vec![10, 30], vec![1, 2])).unwrap()[..],
        [
            Action::RecordSwitch(_),
            Action::Switch(SwitchOrder {
                prepared: false,
                ..
            })
        ]
    ));
    // a node that skipped a round's switch prepares nothing for the round after
    assert_eq!(p.update_sent(5, 4), vec![]);
}

#[test]
fn finished_refused_and_unexpected_messages() {
    let mut p = Participant::new(ME, 3, 10);
    assert_eq!(
        p.handle(3, &Body::Federation(FederationMsg::Finished)),
        Ok(vec![Action::Finished])
    );
    // finished at a round this node's model has not reached: not its final model
    assert_eq!(
        p.handle(5, &Body::Federation(FederationMsg::Finished)),
        Err(ParticipantError::FinishedAhead {
            held: 3,
            committed: 5
        })
    );
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

#[test]
fn setup_material_names_every_hospital_once_before_it_is_checked() {
    let mut p = Participant::new(ME, 0, 10);
    let all: Vec<PartyKeys> = (1..=3).map(keys_of).collect();
    assert_eq!(
        p.handle(
            0,
            &Body::Federation(FederationMsg::SetupKeys {
                parties: all.clone()
            })
        ),
        Ok(vec![Action::CheckSetupKeys { parties: all }])
    );
    // a hospital left out (the coordinator keeps one share back), or one added, or twice
    for got in [vec![1, 2], vec![1, 2, 3, 4], vec![1, 2, 2], vec![2, 1, 3]] {
        let parties = got.iter().copied().map(keys_of).collect();
        assert_eq!(
            p.handle(0, &Body::Federation(FederationMsg::SetupKeys { parties })),
            Err(ParticipantError::SetupParties { got, hospitals: 3 })
        );
    }
    // relayed shares: one from each other hospital (1 and 3), never one "from" this one
    let ok = vec![sealed_from(3), sealed_from(1)];
    assert!(matches!(
        p.handle(
            0,
            &Body::Federation(FederationMsg::RelayedShares { sealed: ok })
        )
        .as_deref(),
        Ok([Action::OpenRelayedShares { .. }])
    ));
    for from in [vec![1], vec![1, 2, 3], vec![1, 3, 3]] {
        let sealed = from.iter().copied().map(sealed_from).collect();
        let mut sorted = from.clone();
        sorted.sort_unstable();
        assert_eq!(
            p.handle(
                0,
                &Body::Federation(FederationMsg::RelayedShares { sealed })
            ),
            Err(ParticipantError::RelayedFrom {
                from: sorted,
                hospitals: 3
            })
        );
    }
}

#[test]
fn only_the_open_rounds_aggregate_of_a_quorum_of_signed_updates_is_switched_once() {
    let mut p = Participant::new(ME, 4, 10);
    // another round than the open one (5): a past aggregate, or one of a round not reached
    for round in [4, 6] {
        assert_eq!(
            p.handle(round, &switch(vec![10, 20], vec![1, 2])),
            Err(ParticipantError::SwitchRound { round, held: 4 })
        );
    }
    // one hospital's update alone (t = 2), a hospital twice, one outside the consortium, or
    // contributions of another size than the aggregate
    let alone = switch(vec![10], vec![1, 2]);
    let twice = Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        contributions: vec![contribution(1, 10), contribution(1, 10)],
        count: 4,
    });
    let outside = Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        contributions: vec![contribution(1, 10), contribution(4, 10)],
        count: 4,
    });
    let mut sized = contributions(&[10, 20]);
    sized[1].count = 3;
    let sized = Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        contributions: sized,
        count: 4,
    });
    for bad in [alone, twice, outside, sized] {
        assert!(matches!(
            p.handle(5, &bad),
            Err(ParticipantError::SwitchContributors { threshold: 2, .. })
        ));
    }
    // the open round's aggregate, then a retry of it with other switchers: served
    assert!(p.handle(5, &switch(vec![10, 20], vec![1, 2])).is_ok());
    assert!(p.handle(5, &switch(vec![10, 20], vec![2, 3])).is_ok());
    // the round redone after a coordinator restart: the same hospitals and weights, new updates
    let mut redone = contributions(&[10, 20]);
    redone.iter_mut().for_each(|c| c.items = [9; 32]);
    let redone = Body::Federation(FederationMsg::SwitchRequest {
        attempt: 0,
        active: vec![1, 2],
        contributions: redone,
        count: 4,
    });
    assert!(p.handle(5, &redone).is_ok());
    // the same hospitals with other weights, or one hospital fewer: refused
    assert_eq!(
        p.handle(5, &switch(vec![10, 21], vec![1, 2])),
        Err(ParticipantError::SwitchedOther(5))
    );
    // a second aggregate of that round over other contributions: refused
    assert_eq!(
        p.handle(5, &switch(vec![10, 20, 30], vec![1, 2])),
        Err(ParticipantError::SwitchedOther(5))
    );
}

#[test]
fn the_sum_a_switcher_switched_is_recorded_first_and_binds_it_after_a_restart() {
    let mut p = Participant::new(ME, 4, 10);
    let actions = p.handle(5, &switch(vec![10, 20], vec![1, 2])).unwrap();
    // the record comes before the switch: the shell stores it before any share leaves
    let record = SwitchRecord {
        round: 5,
        sum: vec![(1, 10), (2, 20)],
    };
    assert_eq!(actions[0], Action::RecordSwitch(record.clone()));
    assert!(matches!(actions[1], Action::Switch(_)));
    // a retry of the same sum needs no new record
    let retry = p.handle(5, &switch(vec![10, 20], vec![2, 3])).unwrap();
    assert!(matches!(retry.as_slice(), [Action::Switch(_)]));
    // restarted: memory is empty, the record is what it has
    let mut restarted = Participant::new(ME, 4, 10).with_switched(Some(record.clone()));
    assert_eq!(
        restarted.handle(5, &switch(vec![10, 20, 30], vec![1, 3])),
        Err(ParticipantError::SwitchedOther(5))
    );
    assert!(
        restarted
            .handle(5, &switch(vec![10, 20], vec![1, 3]))
            .is_ok()
    );
    // without it (today's code before the record) the second sum went through
    let mut forgetful = Participant::new(ME, 4, 10);
    assert!(
        forgetful
            .handle(5, &switch(vec![10, 20, 30], vec![1, 3]))
            .is_ok()
    );
    // a record of an earlier round binds nothing in the next one
    let mut next = Participant::new(ME, 5, 10).with_switched(Some(record));
    assert!(
        next.handle(6, &switch(vec![10, 20, 30], vec![1, 3]))
            .is_ok()
    );
}

#[test]
fn no_round_past_the_privacy_budget_is_trained() {
    let budget = Budget {
        rounds: 5,
        epsilon: 2.5,
        delta: 1e-5,
    };
    let mut p = Participant::new(ME, 4, 10)
        .with_budget(Some(budget))
        .with_clip(2.0);
    // the site's clip bound goes with every round it trains
    assert_eq!(
        p.handle(5, &start()),
        Ok(vec![Action::Train {
            round: 5,
            clip: 2.0
        }])
    );
    // round 6 announced while round 5's result is on its way: refused once it would train
    assert_eq!(p.handle(6, &start()), Ok(vec![]));
    let past = p.result_applied(5).unwrap_err();
    assert!(matches!(
        past,
        ParticipantError::PastBudget {
            round: 6,
            rounds: 5,
            ..
        }
    ));
    assert!(past.to_string().contains("ε = 2.500"), "{past}");
    // announced after it holds round 5: refused as well
    assert!(matches!(
        p.handle(6, &start()),
        Err(ParticipantError::PastBudget { round: 6, .. })
    ));
    // without a budget the same round trains
    let mut free = Participant::new(ME, 5, 10);
    assert_eq!(
        free.handle(6, &start()),
        Ok(vec![Action::Train {
            round: 6,
            clip: 64.0
        }])
    );
}

#[test]
fn a_result_out_of_range_raises_the_alarm_and_is_not_applied() {
    let mut p = Participant::new(ME, 4, 10);
    assert_eq!(
        p.handle(5, &start()),
        Ok(vec![Action::Train {
            round: 5,
            clip: 64.0
        }])
    );
    let actions = p.result_out_of_range(5, "value 9.0 at 3 beyond ±1.0");
    let [Action::Alarm { round: 5, reason }] = actions.as_slice() else {
        panic!("{actions:?}");
    };
    assert!(
        reason.contains("value 9.0 at 3") && reason.contains("did not apply"),
        "{reason}"
    );
    assert_eq!(p.held(), 4, "the round's model is not held");
}
