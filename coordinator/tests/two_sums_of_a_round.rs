//! A compromised coordinator host (issue 46, item 2): this test plays the coordinator with its
//! real kit against a real hospital node of a trained 3-hospital federation (t = 2) and asks it
//! to switch two different sums of one round: the updates of hospitals 1, 2 and 3, then — after
//! the node was killed and restarted, as systemd restarts a node that stopped — of hospitals 1
//! and 2 alone. Their difference is hospital 3's update, which every hospital reads with the
//! consortium receiving key; a switcher must switch one sum of a round, whatever restarts.
//! The updates are statements signed with the hospitals' own kits (a switcher makes what it
//! switches from the signed seeds and weights; nothing else is sent). Every wait is bounded.

use protocol::FederationMsg;
use std::time::Duration;

use coordinator::provision::Roster;
use protocol::Party;
use protocol::link::{Link, accept_connection, listen};
use protocol::message::{Body, Phase};
use protocol::tls::TlsFiles;
use protocol::transcript::{Contribution, Signer};

mod common;
use common::{Fed, Procs, config, free_port, start_hospital, trained};

const WAIT: Duration = Duration::from_secs(120);

fn contribution(fed: &Fed, hospital: u32, weight: u64) -> Contribution {
    let signer =
        Signer::from_files(&TlsFiles::in_dir(&fed.hospital_dirs[hospital as usize - 1])).unwrap();
    let items = [hospital as u8; 32];
    let a_seed = [hospital as u8 + 100; 32];
    let header = Contribution::new(hospital, weight, 1, items, a_seed);
    let signature = signer.sign(&header.statement(fed.federation, 2));
    header.signed(signature)
}

/// Accepts hospital 1 (held round 1), welcomes it into training, and asks it to switch round
/// 2's sum of `contributions` with `active`; whether it answered with switching shares.
async fn ask_to_switch(
    endpoint: &protocol::quinn::Endpoint,
    fed: &Fed,
    roster: &std::collections::HashMap<String, Party>,
    active: Vec<u32>,
    contributions: Vec<Contribution>,
) -> bool {
    let incoming = tokio::time::timeout(WAIT, endpoint.accept())
        .await
        .expect("the node connects")
        .unwrap();
    let link: Link = accept_connection(incoming, fed.federation, roster)
        .await
        .unwrap();
    let hello = tokio::time::timeout(WAIT, link.accept())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(
            hello.envelope.body,
            Body::Federation(FederationMsg::Hello { last_round: 1, .. })
        ),
        "{:?}",
        hello.envelope.body.kind()
    );
    link.send(
        1,
        Body::Federation(FederationMsg::Welcome {
            index: 1,
            hospitals: 3,
            threshold: 2,
            plaintext: false,
            phase: Phase::Training { committed: 1 },
        }),
    )
    .await
    .unwrap();
    link.send(
        2,
        Body::Federation(FederationMsg::SwitchRequest {
            attempt: 0,
            active,
            contributions,
            count: 1,
        }),
    )
    .await
    .unwrap();
    let switched = loop {
        match tokio::time::timeout(Duration::from_secs(60), link.accept()).await {
            Ok(Ok(m)) => {
                if matches!(
                    m.envelope.body,
                    Body::Federation(FederationMsg::SwitchShares { .. })
                ) {
                    break true;
                }
            }
            _ => break false,
        }
    };
    link.close("done");
    switched
}

#[test]
fn a_switcher_switches_one_sum_of_a_round_whatever_restarts() {
    let port = free_port();
    let fed = trained(&config(3, 2, 3, 1, port));
    let roster = Roster::read(&fed.coordinator_dir.join("roster.toml"))
        .unwrap()
        .parties();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let endpoint = listen(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &TlsFiles::in_dir(&fed.coordinator_dir),
    )
    .unwrap();
    let all = vec![
        contribution(&fed, 1, 100),
        contribution(&fed, 2, 100),
        contribution(&fed, 3, 100),
    ];
    let mut node = Procs(vec![start_hospital(&fed, 1)]);
    let first = rt.block_on(ask_to_switch(
        &endpoint,
        &fed,
        &roster,
        vec![1, 2],
        all.clone(),
    ));
    assert!(first, "the node did not switch the first sum");
    // killed and restarted (a relayed bad signature stops a node; systemd restarts it)
    let _ = node.0[0].kill();
    let _ = node.0[0].wait();
    node.0[0] = start_hospital(&fed, 1);
    let second = rt.block_on(ask_to_switch(
        &endpoint,
        &fed,
        &roster,
        vec![1, 3],
        all[..2].to_vec(),
    ));
    assert!(
        !second,
        "a second sum of the round was switched after a restart"
    );
    let log = std::fs::read_to_string(fed.root.join("hospital-1.log")).unwrap();
    assert!(
        log.contains("a second switch request for round 2 over other hospitals or weights"),
        "{log}"
    );
    // the record was on disk before the first share left
    assert!(fed.root.join("node-1/state/switched.bin").exists());
}
