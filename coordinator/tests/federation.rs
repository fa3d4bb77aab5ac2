//! Faults and bad input, with the real binaries on 127.0.0.1: a hospital killed mid-round, the
//! coordinator killed with SIGKILL and restarted, and a peer sending garbage, ciphertexts of other
//! parameters, updates for a past round, messages in another hospital's name, or a certificate
//! of another CA. Every loop and wait is bounded.

use protocol::FederationMsg;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use coordinator::store::Store;
use he_agg::ckks::{CkksContext, Parameters, Preset, wire};
use protocol::link::connect;
use protocol::message::Body;
use protocol::tls::TlsFiles;
use protocol::transcript::{self, Signer, Statement};
use protocol::{Envelope, Party};

mod common;
use common::{Fed, Procs, config, coordinator_bin, free_port, provisioned, start_hospital};

/// A running coordinator and the commit markers it prints.
struct Coordinator {
    child: Child,
    commits: mpsc::Receiver<u64>,
}

impl Coordinator {
    fn start(fed: &Fed, log: &str) -> Self {
        let mut child = Command::new(coordinator_bin())
            .args(["run", "--dir"])
            .arg(&fed.coordinator_dir)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(fed.root.join(log)).unwrap())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, commits) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(r) = line
                    .strip_prefix("HEAL-ROUND-COMMITTED ")
                    .and_then(|r| r.trim().parse().ok())
                {
                    let _ = tx.send(r);
                }
            }
        });
        Self { child, commits }
    }

    fn wait_commit(&self, round: u64, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.commits.recv_timeout(left) {
                Ok(r) if r >= round => return,
                Ok(_) => continue,
                Err(e) => panic!("round {round} was not committed in {limit:?}: {e}"),
            }
        }
    }

    fn wait_exit(&mut self, limit: Duration) {
        wait_exit(&mut self.child, limit, "coordinator");
    }
}

fn wait_exit(child: &mut Child, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "{what} exited with {status}");
            return;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not finish in {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LIMIT: Duration = Duration::from_secs(600);

#[test]
fn a_hospital_killed_mid_round_leaves_the_round_to_the_quorum_and_the_threshold() {
    let fed = provisioned(&config(5, 3, 4, 3, free_port()));
    let mut coord = Coordinator::start(&fed, "coordinator.log");
    let mut nodes = Procs((1..=5).map(|i| start_hospital(&fed, i)).collect());
    coord.wait_commit(1, LIMIT);
    // hospital 5 dies during round 2
    nodes.0[4].kill().unwrap();
    let _ = nodes.0[4].wait();
    coord.wait_exit(LIMIT);
    for (i, n) in nodes.0.iter_mut().enumerate().take(4) {
        wait_exit(n, Duration::from_secs(60), &format!("hospital {}", i + 1));
    }
    let store = Store::open_existing(&fed.coordinator_dir.join("state.redb")).unwrap();
    let rounds = store.rounds().unwrap();
    assert_eq!(
        rounds.iter().map(|r| r.round).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(rounds[0].participants.len(), 5);
    for r in &rounds[1..] {
        let who: Vec<u32> = r.participants.iter().map(|p| p.0).collect();
        assert_eq!(who, vec![1, 2, 3, 4], "round {}", r.round);
        assert_eq!(
            r.switchers.len(),
            3,
            "t of N re-encrypted round {}",
            r.round
        );
        assert_eq!(r.receivers, vec![1, 2, 3, 4]);
    }
}

#[test]
fn a_coordinator_killed_mid_round_resumes_without_losing_or_repeating_a_round() {
    let fed = provisioned(&config(3, 2, 3, 4, free_port()));
    let mut coord = Coordinator::start(&fed, "coordinator-1.log");
    let mut nodes = Procs((1..=3).map(|i| start_hospital(&fed, i)).collect());
    coord.wait_commit(2, LIMIT);
    // SIGKILL while round 3 runs
    coord.child.kill().unwrap();
    let _ = coord.child.wait();
    drop(coord);
    std::thread::sleep(Duration::from_millis(500));
    let mut coord = Coordinator::start(&fed, "coordinator-2.log");
    coord.wait_exit(LIMIT);
    for (i, n) in nodes.0.iter_mut().enumerate() {
        wait_exit(n, Duration::from_secs(60), &format!("hospital {}", i + 1));
    }
    // `status --json` reads the same store: every round, the bytes summed as summary.json does
    let status = Command::new(coordinator_bin())
        .args(["status", "--json", "--audit", "3", "--dir"])
        .arg(&fed.coordinator_dir)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let doc: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let store = Store::open_existing(&fed.coordinator_dir.join("state.redb")).unwrap();
    let records = store.rounds().unwrap();
    assert_eq!(doc["summary"]["rounds"], 4);
    assert_eq!(
        doc["summary"]["bytes_up"].as_u64(),
        Some(records.iter().map(|r| r.bytes_up).sum::<u64>())
    );
    assert_eq!(doc["phase"], "Finished { rounds: 4 }");
    assert_eq!(doc["parties"].as_array().map(Vec::len), Some(3));
    assert_eq!(doc["audit"].as_array().map(Vec::len), Some(3));
    let rounds: Vec<u64> = records.iter().map(|r| r.round).collect();
    assert_eq!(
        rounds,
        vec![1, 2, 3, 4],
        "every round committed exactly once"
    );
    let log = store.audit_log().unwrap();
    assert!(
        log.iter().filter(|e| e.event == "joined").count() >= 6,
        "hospitals reconnected by themselves"
    );
}

#[test]
fn bad_updates_and_strangers_are_refused_and_logged_while_the_rounds_go_on() {
    let port = free_port();
    // a round waits for every connected hospital (above the quorum of 2) until the deadline:
    // the round the impostor is told of stays open while it talks
    let fed = provisioned(&config(3, 2, 2, 4, port));
    let mut coord = Coordinator::start(&fed, "coordinator.log");
    let mut nodes = Procs((1..=3).map(|i| start_hospital(&fed, i)).collect());
    coord.wait_commit(1, LIMIT);
    // hospital 3's node goes away; someone holding its kit misbehaves during round 2
    nodes.0[2].kill().unwrap();
    let _ = nodes.0[2].wait();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let replies = rt.block_on(misbehave(&fed, port));
    assert!(
        replies.iter().any(|r| r.contains("the federation's have")),
        "a model of another size refused at the door: {replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.contains("magic")),
        "random bytes refused: {replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.contains("other parameters")),
        "foreign parameters refused: {replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.contains("while round")),
        "a past round refused: {replies:?}"
    );
    assert!(
        replies.iter().any(|r| r.contains("receiving key differs")),
        "another consortium receiving key refused: {replies:?}"
    );
    assert!(
        replies
            .iter()
            .any(|r| r.contains("hospital 3's signature over its receiving key does not verify")),
        "an unsigned receiving key refused: {replies:?}"
    );
    // the node comes back; the federation finishes
    nodes.0[2] = start_hospital(&fed, 3);
    coord.wait_exit(LIMIT);
    for (i, n) in nodes.0.iter_mut().enumerate() {
        wait_exit(n, Duration::from_secs(60), &format!("hospital {}", i + 1));
    }
    let store = Store::open_existing(&fed.coordinator_dir.join("state.redb")).unwrap();
    assert_eq!(store.rounds().unwrap().len(), 4);
    let log = store.audit_log().unwrap();
    let refused: Vec<String> = log
        .iter()
        .filter(|e| e.event == "refused")
        .map(|e| e.detail.clone())
        .collect();
    assert!(
        refused
            .iter()
            .any(|d| d.contains("hospital 1") && d.contains("hospital 3")),
        "impersonation logged: {refused:?}"
    );
    assert!(refused.len() >= 4, "{refused:?}");
    assert!(
        log.iter().any(|e| e.event == "connection-refused"),
        "the foreign certificate was logged"
    );
    let rows = log
        .iter()
        .filter(|e| e.event.starts_with("connection"))
        .count();
    assert!(
        rows <= 3,
        "21 refused connections took {rows} audit rows (one per minute at most)"
    );
}

/// Sends every kind of bad message as hospital 3; returns the coordinator's refusals.
async fn misbehave(fed: &Fed, port: u16) -> Vec<String> {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    // a certificate from another CA never gets a connection (the coordinator logs it)
    let foreign = foreign_kit(&fed.root);
    // a stranger knocking many times is counted, not written down each time
    for _ in 0..20 {
        if let Ok(l) = connect(addr, &foreign, fed.federation, 3).await {
            let _ = tokio::time::timeout(Duration::from_secs(2), l.accept()).await;
        }
    }
    if let Ok(l) = connect(addr, &foreign, fed.federation, 3).await {
        // the handshake may complete on this side before the server refuses it
        let _ = l
            .send(
                0,
                Body::Federation(FederationMsg::Hello {
                    software: "mallory".into(),
                    last_round: 0,
                    items: 1,
                }),
            )
            .await;
        assert!(
            tokio::time::timeout(Duration::from_secs(5), l.accept())
                .await
                .map(|r| r.is_err())
                .unwrap_or(true)
        );
    }
    let kit = TlsFiles::in_dir(&fed.hospital_dirs[2]);
    // a model of another size is refused at the door, and the refusal names the federation's
    let link = connect(addr, &kit, fed.federation, 3).await.unwrap();
    link.send(
        1,
        Body::Federation(FederationMsg::Hello {
            software: "mallory".into(),
            last_round: 1,
            items: 1_000,
        }),
    )
    .await
    .unwrap();
    let refusal = loop {
        let m = tokio::time::timeout(Duration::from_secs(30), link.accept())
            .await
            .expect("a refusal")
            .expect("a refusal before the connection closes");
        if let Body::Refused { reason } = m.envelope.body {
            break reason;
        }
    };
    let items: u32 = refusal
        .split("the federation's have ")
        .nth(1)
        .and_then(|r| r.split(':').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the refusal names the update size: {refusal}"));
    let link = connect(addr, &kit, fed.federation, 3).await.unwrap();
    link.send(
        1,
        Body::Federation(FederationMsg::Hello {
            software: "mallory".into(),
            last_round: 1,
            items,
        }),
    )
    .await
    .unwrap();
    // wait to be told of a round that collects
    let round = loop {
        let m = tokio::time::timeout(Duration::from_secs(120), link.accept())
            .await
            .expect("a round start")
            .unwrap();
        if let Body::Federation(FederationMsg::RoundStart { .. }) = m.envelope.body {
            break m.envelope.round;
        }
    };
    // garbage, other parameters, a past round
    let mut s = link
        .open(
            round,
            Body::Federation(FederationMsg::Update {
                weight: 10,
                count: items,
                a_seed: [0; 32],
                signature: vec![],
            }),
        )
        .await
        .unwrap();
    s.item(&[0xAB; 1000]).await.unwrap();
    s.finish().await.unwrap();
    let other =
        CkksContext::new(Parameters::insecure_for_tests(13, &[60, 60], &[], 1, 40.0).unwrap())
            .unwrap();
    let sk = other.key_generator().unwrap().secret_key();
    let ct = other.sk_encryptor(&sk).unwrap().encrypt_seeded_aes(
        &other
            .encode_real_pairs(&[0.5; 16], 2, 2f64.powi(50))
            .unwrap(),
        [1; 32],
    );
    let mut s = link
        .open(
            round,
            Body::Federation(FederationMsg::Update {
                weight: 10,
                count: items,
                a_seed: [0; 32],
                signature: vec![],
            }),
        )
        .await
        .unwrap();
    s.item(&wire::encode_seeded_update(&other, &ct))
        .await
        .unwrap();
    s.finish().await.unwrap();
    link.send(
        round - 1,
        Body::Federation(FederationMsg::Update {
            weight: 10,
            count: items,
            a_seed: [0; 32],
            signature: vec![],
        }),
    )
    .await
    .unwrap();
    // a message in hospital 1's name on hospital 3's connection
    let forged = Envelope::new(
        fed.federation,
        round,
        Party::Hospital(1),
        Body::Federation(FederationMsg::SetupDone {
            receive_key: vec![],
            signature: vec![],
        }),
    );
    let mut raw = link.open_raw().await.unwrap();
    raw.item(&forged.encode()).await.unwrap();
    raw.finish().await.unwrap();
    // a consortium receiving key of its own (as if it had dealt inconsistent contributions)
    let agg = CkksContext::new(Parameters::preset(Preset::Aggregation)).unwrap();
    let mut kg = agg.key_generator().unwrap();
    let own = kg.secret_key();
    let receive_key = wire::encode_public_key(&agg, &kg.public_key(&own));
    // first unsigned (as protocol 5 sent it), then signed with hospital 3's own key
    link.send(
        0,
        Body::Federation(FederationMsg::SetupDone {
            receive_key: receive_key.clone(),
            signature: vec![0x30; 70],
        }),
    )
    .await
    .unwrap();
    let signature = Signer::from_files(&kit)
        .unwrap()
        .sign(&Statement::ReceiveKey {
            federation: fed.federation,
            hospital: 3,
            receive_key: transcript::digest(&receive_key),
        });
    link.send(
        0,
        Body::Federation(FederationMsg::SetupDone {
            receive_key,
            signature,
        }),
    )
    .await
    .unwrap();
    let mut replies = vec![refusal];
    let deadline = Instant::now() + Duration::from_secs(30);
    while replies.len() < 6 && Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_secs(10), link.accept()).await {
            Ok(Ok(m)) => {
                if let Body::Refused { reason } = m.envelope.body {
                    replies.push(reason);
                }
            }
            _ => break,
        }
    }
    link.close("done");
    replies
}

/// A kit whose certificate comes from another CA (trusting ours for the server).
fn foreign_kit(root: &Path) -> TlsFiles {
    let other = protocol::pki::Ca::new("Mallory CA").unwrap();
    let cert = other
        .issue(&protocol::identity::hospital_dns_name(3))
        .unwrap();
    let dir = root.join("foreign");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root.join("fed/coordinator/ca.pem"), dir.join("ca.pem")).unwrap();
    std::fs::write(dir.join("cert.pem"), cert.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), cert.key_pem).unwrap();
    TlsFiles::in_dir(&dir)
}
