//! A coordinator host that is compromised: this test plays the coordinator (with its real kit)
//! against a real hospital node on 127.0.0.1 and tries to make it take key material of its own.
//! The node must refuse to deal a single share under a substituted key, sign what it deals, and
//! refuse a setup that changes after it was stored. Every wait is bounded.

use protocol::FederationMsg;
use std::collections::HashMap;
use std::process::Child;
use std::time::{Duration, Instant};

use coordinator::provision::Roster;
use he_agg::ckks::{CkksContext, Parameters, Preset};
use he_agg::multiparty::{Crs, PublicKeyGen, wire as mpw};
use he_agg::ring::Prng;
use protocol::link::{Incoming, accept_connection, listen};
use protocol::message::{Body, Phase};
use protocol::tls::TlsFiles;
use protocol::transcript::{self, PartyKeys, Signer, Statement, Verifier};
use protocol::{Link, Party};

mod common;
use common::{Fed, Procs, config, free_port, provisioned, start_hospital};

const WAIT: Duration = Duration::from_secs(120);

/// Key shares for `hospital` made with a fresh secret, signed by `signer` (the hospital's own
/// kit for an honest entry, the coordinator's for a forged one).
fn party_keys(fed: &Fed, hospital: u32, signer: &Signer) -> PartyKeys {
    let ctx = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let crs = Crs::from_federation(&fed.federation.0);
    let sk = ctx.key_generator().unwrap().secret_key();
    let share = PublicKeyGen::new(&ctx, &crs)
        .share(&sk, &mut Prng::from_os().unwrap())
        .unwrap();
    let public_key_share = mpw::encode_public_key_share(&ctx, &share);
    let exchange_key = [hospital as u8 + 40; 32];
    let signature = signer.sign(&Statement::KeyShares {
        federation: fed.federation,
        hospital,
        public_key_share: transcript::digest(&public_key_share),
        exchange_key,
    });
    PartyKeys {
        hospital,
        public_key_share,
        exchange_key,
        certificate: signer.certificate().to_vec(),
        signature,
    }
}

fn kit_signer(fed: &Fed, hospital: usize) -> Signer {
    Signer::from_files(&TlsFiles::in_dir(&fed.hospital_dirs[hospital - 1])).unwrap()
}

/// Accepts hospital 1, answers its hello with a welcome into setup, and returns the link with
/// its signed key shares.
async fn welcome_hospital_1(
    endpoint: &protocol::quinn::Endpoint,
    fed: &Fed,
    roster: &HashMap<String, Party>,
) -> (Link, PartyKeys) {
    let incoming = tokio::time::timeout(WAIT, endpoint.accept())
        .await
        .expect("the node connects")
        .unwrap();
    let link = accept_connection(incoming, fed.federation, roster)
        .await
        .unwrap();
    assert_eq!(link.peer(), Party::Hospital(1));
    let hello = next(&link).await;
    assert!(matches!(
        hello.envelope.body,
        Body::Federation(FederationMsg::Hello { .. })
    ));
    link.send(
        0,
        Body::Federation(FederationMsg::Welcome {
            index: 1,
            hospitals: 3,
            threshold: 2,
            plaintext: false,
            phase: Phase::Setup,
        }),
    )
    .await
    .unwrap();
    loop {
        if let Body::Federation(FederationMsg::KeyShares {
            public_key_share,
            exchange_key,
            certificate,
            signature,
        }) = next(&link).await.envelope.body
        {
            let keys = PartyKeys {
                hospital: 1,
                public_key_share,
                exchange_key,
                certificate,
                signature,
            };
            // what the node signs verifies for hospital 1 against the consortium CA
            Verifier::from_files(&TlsFiles::in_dir(&fed.coordinator_dir))
                .unwrap()
                .verify(
                    &keys.certificate,
                    1,
                    &keys.statement(fed.federation),
                    &keys.signature,
                )
                .unwrap();
            return (link, keys);
        }
    }
}

async fn next(link: &Link) -> Incoming {
    tokio::time::timeout(WAIT, link.accept())
        .await
        .expect("a message in time")
        .expect("a message")
}

/// Waits for the node to exit and returns its log; it must fail, naming why.
fn refused(node: &mut Child, fed: &Fed) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = node.try_wait().unwrap() {
            assert!(!status.success(), "the node must stop, not finish");
            return std::fs::read_to_string(fed.root.join("hospital-1.log")).unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "the node did not stop in {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_node_takes_no_key_material_the_coordinator_made_or_changed() {
    let port = free_port();
    let fed = provisioned(&config(3, 2, 2, 1, port));
    let roster = Roster::read(&fed.coordinator_dir.join("roster.toml"))
        .unwrap()
        .parties();
    let coordinator = Signer::from_files(&TlsFiles::in_dir(&fed.coordinator_dir)).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let endpoint = listen(
        format!("127.0.0.1:{port}").parse().unwrap(),
        &TlsFiles::in_dir(&fed.coordinator_dir),
    )
    .unwrap();

    // 1. the coordinator hands out key shares of its own for hospitals 2 and 3 (signed with
    //    the coordinator's certificate key, the only one on its host)
    let mut procs = Procs(vec![start_hospital(&fed, 1)]);
    let (link, own) = rt.block_on(welcome_hospital_1(&endpoint, &fed, &roster));
    let forged = vec![
        own.clone(),
        party_keys(&fed, 2, &coordinator),
        party_keys(&fed, 3, &coordinator),
    ];
    rt.block_on(link.send(
        0,
        Body::Federation(FederationMsg::SetupKeys { parties: forged }),
    ))
    .unwrap();
    let dealt = rt.block_on(async {
        let mut dealt = false;
        while let Ok(Ok(m)) = tokio::time::timeout(WAIT, link.accept()).await {
            dealt |= matches!(
                m.envelope.body,
                Body::Federation(FederationMsg::ShamirShares { .. })
            );
        }
        dealt
    });
    let log = refused(&mut procs.0[0], &fed);
    assert!(!dealt, "the node dealt shares under a forged setup");
    assert!(
        log.contains(
            "the certificate presented for hospital 2 is not one the consortium CA issued to it"
        ),
        "{log}"
    );
    assert!(
        !fed.root.join("node-1/state/peers.bin").exists(),
        "a forged setup stored"
    );

    // 2. an honest relay (each entry signed by its own hospital): the node checks, stores and
    //    deals, each sealed share signed for its receiver
    procs.0[0] = start_hospital(&fed, 1);
    let (link, own2) = rt.block_on(welcome_hospital_1(&endpoint, &fed, &roster));
    assert_eq!(own2.public_key_share, own.public_key_share, "keys are kept");
    let honest = vec![
        own2.clone(),
        party_keys(&fed, 2, &kit_signer(&fed, 2)),
        party_keys(&fed, 3, &kit_signer(&fed, 3)),
    ];
    rt.block_on(link.send(
        0,
        Body::Federation(FederationMsg::SetupKeys {
            parties: honest.clone(),
        }),
    ))
    .unwrap();
    let sealed = rt.block_on(async {
        loop {
            if let Body::Federation(FederationMsg::ShamirShares { sealed }) =
                next(&link).await.envelope.body
            {
                break sealed;
            }
        }
    });
    let verifier = Verifier::from_files(&TlsFiles::in_dir(&fed.coordinator_dir)).unwrap();
    assert_eq!(sealed.len(), 2);
    for s in &sealed {
        let statement = Statement::Dealt {
            federation: fed.federation,
            from: 1,
            to: s.peer,
            sealed: transcript::digest(&s.sealed),
        };
        verifier
            .verify(&own2.certificate, 1, &statement, &s.signature)
            .unwrap();
    }

    // 3. later the coordinator relays another (validly signed) key share for hospital 3: a
    //    setup never changes once stored
    let mut changed = honest;
    changed[2] = party_keys(&fed, 3, &kit_signer(&fed, 3));
    rt.block_on(link.send(
        0,
        Body::Federation(FederationMsg::SetupKeys { parties: changed }),
    ))
    .unwrap();
    let log = refused(&mut procs.0[0], &fed);
    assert!(
        log.contains("relays other key material than at setup"),
        "{log}"
    );
    link.close("done");
}
