//! Moving a round's bytes through HEAL's QUIC + mutual-TLS links on 127.0.0.1: `clients`
//! hospitals each upload `items` items of `kib` KiB to one coordinator at once, then the
//! coordinator sends each of them the same; wall time and the process's CPU time (user + system,
//! both ends are in this process) per direction.
//!
//!     cargo run --release -p protocol --example bench_link -- [clients 5] [items 37] [kib 240]

use protocol::FederationMsg;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use protocol::identity::{COORDINATOR_SERVER_NAME, hospital_dns_name};
use protocol::link::{accept_connection, connect, listen};
use protocol::pki::{Ca, Issued};
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId, Party};

const FED: FederationId = FederationId([5; 16]);

fn kit(dir: &std::path::Path, ca: &Ca, issued: &Issued) -> TlsFiles {
    std::fs::create_dir_all(dir).expect("kit dir");
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca");
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).expect("cert");
    std::fs::write(dir.join("key.pem"), &issued.key_pem).expect("key");
    TlsFiles::in_dir(dir)
}

fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 * 1e-6;
    t(u.ru_utime) + t(u.ru_stime)
}

fn header(count: usize) -> Body {
    Body::Federation(FederationMsg::Update {
        weight: 1,
        count: count as u32,
        a_seed: [0; 32],
        signature: vec![],
    })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("numbers"))
        .collect();
    let (clients, items, kib) = (
        args.first().copied().unwrap_or(5),
        args.get(1).copied().unwrap_or(37),
        args.get(2).copied().unwrap_or(240),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::new("bench CA").expect("ca");
    let coordinator = kit(
        &dir.path().join("c"),
        &ca,
        &ca.issue(COORDINATOR_SERVER_NAME).expect("cert"),
    );
    let mut roster = HashMap::new();
    let mut kits = Vec::new();
    for h in 1..=clients as u32 {
        let issued = ca.issue(&hospital_dns_name(h)).expect("cert");
        roster.insert(issued.fingerprint.clone(), Party::Hospital(h));
        kits.push(kit(&dir.path().join(format!("h{h}")), &ca, &issued));
    }
    let endpoint = listen("127.0.0.1:0".parse().expect("addr"), &coordinator).expect("listen");
    let addr = endpoint.local_addr().expect("addr");
    let payload = vec![0x5au8; kib << 10];
    let mut links = Vec::new();
    for (h, k) in kits.iter().enumerate() {
        let (ep, roster) = (endpoint.clone(), roster.clone());
        let server = tokio::spawn(async move {
            let incoming = ep.accept().await.expect("incoming");
            accept_connection(incoming, FED, &roster)
                .await
                .expect("accept")
        });
        let client = connect(addr, k, FED, h as u32 + 1).await.expect("connect");
        links.push((server.await.expect("server"), client));
    }
    for rep in 0..3 {
        for (up, what) in [
            (true, "hospitals → coordinator"),
            (false, "coordinator → hospitals"),
        ] {
            let (c0, t0) = (cpu_s(), Instant::now());
            let mut tasks = tokio::task::JoinSet::new();
            for (server, client) in &links {
                let (from, to) = if up {
                    (client.clone(), server.clone())
                } else {
                    (server.clone(), client.clone())
                };
                let p = payload.clone();
                tasks.spawn(async move {
                    let mut s = from.open(1, header(items)).await.expect("open");
                    for _ in 0..items {
                        s.item(&p).await.expect("item");
                    }
                    s.finish().await.expect("finish");
                });
                tasks.spawn(async move {
                    let mut m = to.accept().await.expect("accept");
                    while m.next_item().await.expect("item").is_some() {}
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.expect("task");
            }
            let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_s() - c0);
            let mb = (clients * items * kib) as f64 / 1024.0;
            println!(
                "rep {rep} {what}: {mb:.1} MB in {:.1} ms wall, {:.1} ms CPU ({:.2} CPU-ms per MB)",
                wall * 1e3,
                cpu * 1e3,
                cpu * 1e3 / mb
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
}
