//! The mode (a) serving coordinator SIGKILLed at each boundary of its key setup (issue 41): after
//! round-1 shares arrive, once the keys are made from both rounds, while the evaluation keys'
//! sums go out to the keyholders — each time restarted from its directory, with the same three
//! keyholders (`client hold-keys`) waiting for it. The last start must complete a setup and serve
//! hospital 1's request with the plaintext network's labels, and no keyholder may have stopped.
//! (Killed after the setup was saved, it serves the saved setup: `serving.rs`.) Every wait is
//! bounded; every process is killed on every exit path.

use std::time::{Duration, Instant};

mod common;
use common::serving_host::{
    infer_at, keyholder, labels_of, plaintext_labels, serve_collective, trained_collective,
};
use common::{Procs, free_port, wait_for_line};

#[test]
fn a_serving_coordinator_killed_at_each_setup_boundary_serves_after_its_restart() {
    let fed = trained_collective();
    let addr = format!("127.0.0.1:{}", free_port());
    let mut server = Procs(Vec::new());
    let mut keyholders = Procs(Vec::new());
    for (k, boundary) in [
        "round-1 key shares stored",
        "keys made from every keyholder's shares",
        "sending the evaluation keys' sums",
    ]
    .iter()
    .enumerate()
    {
        let log = fed.root.join(format!("serve-{k}.log"));
        server.0.push(serve_collective(&fed, &addr, &log, None));
        if keyholders.0.is_empty() {
            keyholders.0 = (1..=3).map(|i| keyholder(&fed, i, &addr)).collect();
        }
        wait_for_line(&log, boundary, Duration::from_secs(300));
        let mut s = server.0.pop().unwrap();
        let _ = s.kill();
        let _ = s.wait();
    }
    let log = fed.root.join("serve-last.log");
    let t = Instant::now();
    server.0.push(serve_collective(&fed, &addr, &log, None));
    wait_for_line(
        &log,
        "the model is served by its keyholders",
        Duration::from_secs(600),
    );
    let setup_s = t.elapsed().as_secs_f64();
    let images = ["breastmnist:test:0", "breastmnist:test:1"];
    let json = fed.root.join("served.json");
    let served = infer_at(&fed, &addr, &images, &json);
    assert_eq!(labels_of(&served, &json), plaintext_labels(&fed, &images));
    for (i, k) in keyholders.0.iter_mut().enumerate() {
        assert!(
            k.try_wait().unwrap().is_none(),
            "keyholder {} stopped through the coordinator's restarts",
            i + 1
        );
    }
    eprintln!(
        "HEAL-SERVING-CRASHES killed at 3 setup boundaries; the last start served after {setup_s:.1} s"
    );
}
