//! A coordinator that crashed and came back on its address ends its hospitals' old connections
//! at once: its endpoint answers their packets with a QUIC stateless reset made with a key
//! derived from its private key, the same after the restart, so the hospital takes the reset
//! and reconnects. With a random key per start (quinn's default) the reset is ignored and the
//! hospital waits out the 20 s idle timeout; the coordinator-crash schedule measured 20.7–22.8 s
//! from each kill to the next commit that way (coordinator/tests/crashes.rs).
//!
//! The first coordinator runs in a child process (this test binary again, told so by
//! `HEAL_TEST_RESTART_CHILD`) so that it can be killed with SIGKILL, as a crash would end it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use protocol::Party;
use protocol::identity::cert_fingerprint;
use protocol::link::{accept_connection, connect, listen};
use protocol::tls::TlsFiles;

mod common;
use common::{FED, setup};

const CHILD: &str = "HEAL_TEST_RESTART_CHILD";

/// The child's part: serve one connection from hospital 1 on `addr`, then wait to be killed.
fn child(spec: &str) {
    let (dir, rest) = spec.split_once('|').expect("dir|addr|fingerprint");
    let (addr, fingerprint) = rest.split_once('|').expect("addr|fingerprint");
    let addr: SocketAddr = addr.parse().unwrap();
    let tls = TlsFiles::in_dir(std::path::Path::new(dir));
    let roster = HashMap::from([(fingerprint.to_string(), Party::Hospital(1))]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let endpoint = listen(addr, &tls).unwrap();
        let incoming = endpoint.accept().await.unwrap();
        let _link = accept_connection(incoming, FED, &roster).await.unwrap();
        // killed by the parent long before this ends
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
}

#[test]
fn a_restarted_coordinator_resets_the_old_connections_at_once() {
    match std::env::var(CHILD) {
        Ok(spec) => child(&spec),
        Err(_) => tokio::runtime::Runtime::new().unwrap().block_on(parent()),
    }
}

async fn parent() {
    let s = setup();
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let hospital_cert = s.hospital.own_cert_der().unwrap();
    let coordinator_dir = s.coordinator.key.parent().unwrap().to_path_buf();
    let mut first = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_restarted_coordinator_resets_the_old_connections_at_once",
            "--nocapture",
        ])
        .env(
            CHILD,
            format!(
                "{}|{addr}|{}",
                coordinator_dir.display(),
                cert_fingerprint(&hospital_cert)
            ),
        )
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // the hospital connects once the child listens
    let deadline = Instant::now() + Duration::from_secs(30);
    let link = loop {
        match connect(addr, &s.hospital, FED, 1).await {
            Ok(link) => break link,
            Err(e) => {
                assert!(Instant::now() < deadline, "the first coordinator: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    // the coordinator crashes, and comes back on its address
    first.kill().unwrap();
    first.wait().unwrap();
    let killed = Instant::now();
    let second = listen(addr, &s.coordinator).unwrap();
    // well inside the 20 s idle timeout: only a reset the hospital accepts ends it this soon
    let reason = tokio::time::timeout(Duration::from_secs(12), link.closed())
        .await
        .expect("the old connection ended within 12 s of the restart");
    assert!(reason.contains("reset"), "{reason}");
    eprintln!(
        "the old connection ended {:.2} s after the kill: {reason}",
        killed.elapsed().as_secs_f64()
    );
    // and the hospital reaches the new coordinator
    let roster = s.roster.clone();
    let server = tokio::spawn(async move {
        let incoming = second.accept().await.expect("a connection");
        accept_connection(incoming, FED, &roster)
            .await
            .map(|l| l.peer())
    });
    let _new = connect(addr, &s.hospital, FED, 1).await.unwrap();
    assert_eq!(server.await.unwrap().unwrap(), Party::Hospital(1));
}
