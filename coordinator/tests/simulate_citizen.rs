//! `coordinator simulate` as a good citizen, with the real binaries: SIGTERM in the middle of a
//! run ends every child process and removes the temporary kits (CA, TLS and exchange keys); a
//! second run into the same output directory is refused at once with a clear message instead
//! of hanging on the first run's hospital state, and `--force` replaces it. Every wait is
//! bounded.

#![cfg(unix)]

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{client_bin, simulate_command};

fn config() -> String {
    let head = "[federation]\nname = \"citizen\"\nhospitals = 3\nthreshold = 2\nrounds = 200\n\
                min_hospitals = 3\nround_timeout_s = 300\n";
    let tail = "\n[he]\nplaintext = true\n\n[simulate]\ntimeout_s = 600\n";
    format!("{head}{}{tail}", common::breastmnist_sections(1))
}

/// Processes whose command line mentions `marker` (this test's temporary directory).
fn processes_mentioning(marker: &str) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if let Ok(cmd) = std::fs::read(entry.path().join("cmdline"))
            && String::from_utf8_lossy(&cmd).contains(marker)
            && pid != std::process::id()
        {
            pids.push(pid);
        }
    }
    pids
}

fn simulate(cfg: &Path, out: &Path, tmp: &Path, extra: &[&str]) -> Child {
    simulate_command(cfg, out)
        .args(extra)
        .env("TMPDIR", tmp)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits at most `limit` for `child` to exit; kills it (and fails) otherwise.
fn wait_bounded(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            // SIGTERM first: simulate then ends its children and removes its kits
            // SAFETY: signals the process this test started.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let t = Instant::now();
            while child.try_wait().unwrap().is_none() && t.elapsed() < Duration::from_secs(20) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = child.kill();
            panic!("{what} did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut s = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut s);
    }
    s
}

#[test]
fn sigterm_ends_every_child_and_removes_the_kits_and_a_used_out_dir_is_refused() {
    client_bin(); // built beside the coordinator before simulate looks for it
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let cfg = dir.path().join("citizen.toml");
    std::fs::write(&cfg, config()).unwrap();
    let out = dir.path().join("out");
    let marker = dir.path().to_str().unwrap().to_string();

    let mut sim = simulate(&cfg, &out, &tmp, &[]);
    // the coordinator and the three hospitals are running, and the kits exist
    let t = Instant::now();
    while processes_mentioning(&marker).len() < 5 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the simulation's children did not start: {:?}",
            processes_mentioning(&marker)
        );
        assert!(sim.try_wait().unwrap().is_none(), "simulate ended early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let kits = || {
        std::fs::read_dir(&tmp)
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with("heal-simulate-")
            })
            .count()
    };
    assert_eq!(kits(), 1, "the kits are in TMPDIR while it runs");

    // SAFETY: signals the simulate process this test started.
    unsafe {
        libc::kill(sim.id() as i32, libc::SIGTERM);
    }
    let status = wait_bounded(&mut sim, Duration::from_secs(60), "simulate after SIGTERM");
    let err = stderr_of(&mut sim);
    assert!(!status.success(), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let t = Instant::now();
    while !processes_mentioning(&marker).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        processes_mentioning(&marker),
        Vec::<u32>::new(),
        "children left running"
    );
    assert_eq!(
        kits(),
        0,
        "the temporary kits (CA and TLS keys) were left behind"
    );

    // the interrupted run's hospital state belongs to another federation: refused at once
    let mut again = simulate(&cfg, &out, &tmp, &[]);
    let status = wait_bounded(&mut again, Duration::from_secs(60), "a second simulate");
    let err = stderr_of(&mut again);
    assert!(!status.success());
    assert!(
        err.contains("earlier simulation") && err.contains("--force"),
        "{err}"
    );
    assert_eq!(kits(), 0);

    // --force replaces it (then this run is interrupted too)
    let mut forced = simulate(&cfg, &out, &tmp, &["--force"]);
    let t = Instant::now();
    while processes_mentioning(&marker).len() < 5 {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "--force did not start the run"
        );
        assert!(
            forced.try_wait().unwrap().is_none(),
            "simulate --force ended early: {}",
            stderr_of(&mut forced)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    unsafe {
        libc::kill(forced.id() as i32, libc::SIGINT);
    }
    wait_bounded(
        &mut forced,
        Duration::from_secs(60),
        "simulate after SIGINT",
    );
    let t = Instant::now();
    while !processes_mentioning(&marker).is_empty() && t.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(processes_mentioning(&marker), Vec::<u32>::new());
    assert_eq!(kits(), 0);
}

/// A hospital whose local training diverges stops with the reason instead of retrying the same
/// round until its deadline (300 s here), and the simulation ends with it.
#[test]
fn a_hospital_whose_training_diverges_stops_with_the_reason() {
    client_bin();
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let cfg = dir.path().join("diverging.toml");
    // Adam's first steps move every weight by about lr: the next batch's loss is not finite
    std::fs::write(&cfg, config().replace("lr = 2e-3", "lr = 1e30")).unwrap();
    let out = dir.path().join("out");
    let mut sim = simulate(&cfg, &out, &tmp, &[]);
    let status = wait_bounded(&mut sim, Duration::from_secs(150), "a diverging simulation");
    let err = stderr_of(&mut sim);
    assert!(!status.success(), "{err}");
    assert!(err.contains("failed"), "{err}");
    let logs: String = std::fs::read_dir(out.join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("local training diverged"), "{logs}");
    assert!(logs.contains("lower [train] lr"), "{logs}");
}
