//! The coordinator's state under disk faults, with the real binaries on 127.0.0.1 (issue 41):
//! its state directory on a small tmpfs that fills in the middle of the federation, and a
//! state file truncated or with one bit flipped when it starts, and a hospital's model state
//! with one bit flipped. Checked: the coordinator stops
//! with its reason instead of waiting for a commit that never comes, the store keeps every
//! round committed before, and once there is space a restart finishes the federation with every
//! round committed once; a damaged file is refused with what to do and left byte for byte as it
//! was; and the mode (a) serving coordinator's state disk filling while it serves. Mounting
//! needs root, as CI has (elsewhere the full-disk test says it skipped).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use coordinator::store::Store;

mod common;
use common::serving_host::{
    infer_at, keyholder, labels_of, log_of, plaintext_labels, serve_collective, trained_collective,
};
use common::{
    Procs, committed_once, config, coordinator_bin, coordinator_logged, free_port,
    hospitals_finish, provisioned, same_final_models, start_hospital, tail, trained, wait_exit,
    wait_for_line, wait_status,
};

const LIMIT: Duration = Duration::from_secs(300);

/// A tmpfs of its own, unmounted however the test ends.
struct Tmpfs {
    dir: tempfile::TempDir,
}

fn mount(args: &[&str]) -> Result<(), String> {
    common::tool("mount", args)
}

impl Tmpfs {
    /// A tmpfs of `mb` MB, or None with a note where it cannot be mounted (not root) and
    /// `HEAL_REQUIRE_NETNS` (CI's "run every root test") is unset.
    fn or_skip(mb: u32) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_str().unwrap().to_string();
        let size = format!("size={mb}m,mode=0700");
        match mount(&["-t", "tmpfs", "-o", &size, "heal-test", &path]) {
            Ok(()) => Some(Self { dir }),
            Err(e) if std::env::var_os("HEAL_REQUIRE_NETNS").is_none() => {
                eprintln!("skipped: cannot mount a tmpfs ({e}); run as root");
                None
            }
            Err(e) => panic!("tmpfs: {e}"),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Gives the disk `mb` MB (an operator freeing space).
    fn resize(&self, mb: u32) {
        let path = self.path().to_str().unwrap();
        mount(&["-o", &format!("remount,size={mb}m"), path]).unwrap();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_state_disk_stops_the_coordinator_with_its_reason_and_a_restart_with_space_loses_nothing()
{
    const ROUNDS: u64 = 8;
    // the store grows by a result (4.5 MB here) each round: this fills after a few
    let Some(disk) = Tmpfs::or_skip(24) else {
        return;
    };
    let fed = provisioned(&config(3, 2, 3, ROUNDS, free_port()));
    let state: PathBuf = disk.path().to_path_buf();
    let args = ["--state-dir".as_ref(), state.as_os_str()];
    let (child, commits) = coordinator_logged(
        Command::new(coordinator_bin()),
        &fed,
        "coordinator-1.log",
        &args,
        &[],
    );
    let mut coord = Procs(vec![child]);
    let mut hospitals = Procs((1..=3).map(|i| start_hospital(&fed, i)).collect());
    let log = fed.root.join("coordinator-1.log");
    let status = wait_status(&mut coord.0[0], LIMIT, "coordinator", &log);
    let stopped_at = Instant::now();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success() && text.contains("cannot be committed"),
        "the coordinator on a full disk ended with {status}:\n{}",
        tail(&log)
    );
    assert!(
        text.contains("No space left on device") && text.contains(state.to_str().unwrap()),
        "the reason names the disk's error and the store:\n{}",
        tail(&log)
    );
    if let Some(why) = text.lines().find(|l| l.starts_with("Error")) {
        eprintln!("the coordinator on the full disk: {why}");
    }
    let before: Vec<u64> = commits.try_iter().map(|(r, _)| r).collect();
    let kept = before.len() as u64;
    assert!(
        (1..ROUNDS).contains(&kept),
        "the disk filled mid-federation (rounds committed before: {before:?})"
    );
    let on_disk = |what: &str| {
        let store = Store::open_existing(&state.join("state.redb")).unwrap();
        let rounds: Vec<u64> = store.rounds().unwrap().iter().map(|r| r.round).collect();
        eprintln!("{what}: {rounds:?}");
        rounds
    };
    // redb may have made the failed round's commit durable before the disk refused a later
    // write of it (its error then says nothing of the outcome): that round is kept too
    let full = on_disk("rounds in the store on the full disk");
    assert!(
        full == (1..=kept).collect::<Vec<_>>() || full == (1..=kept + 1).collect::<Vec<_>>(),
        "every round committed before the disk filled is kept, in order: {full:?} after {kept}"
    );

    // the operator frees space; the service starts again
    disk.resize(512);
    let (child, _) = coordinator_logged(
        Command::new(coordinator_bin()),
        &fed,
        "coordinator-2.log",
        &args,
        &[],
    );
    let mut coord = Procs(vec![child]);
    let log = fed.root.join("coordinator-2.log");
    wait_exit(&mut coord.0[0], LIMIT, "coordinator", &log);
    hospitals_finish(&mut hospitals, &fed);
    assert_eq!(
        on_disk("rounds in the store after the restart"),
        (1..=ROUNDS).collect::<Vec<_>>(),
        "every round committed exactly once, in order"
    );
    committed_once(&state.join("state.redb"), ROUNDS, 3, 2);
    same_final_models(&fed, 3);
    eprintln!(
        "full disk: {kept} of {ROUNDS} rounds committed before the disk filled; the coordinator \
         stopped and said why; restarted with space, it finished in {:.1} s",
        stopped_at.elapsed().as_secs_f64()
    );
}

#[test]
fn a_truncated_or_bit_flipped_state_file_is_refused_at_start_and_left_as_it_was() {
    let fed = trained(&config(3, 2, 3, 2, free_port()));
    let path = fed.coordinator_dir.join("state.redb");
    let good = std::fs::read(&path).unwrap();
    // a bit of the last round's result: a page the newest transaction wrote
    let marker = {
        let store = Store::open_existing(&path).unwrap();
        let result = store.latest_result().unwrap().unwrap();
        result.items[0][1000..1064].to_vec()
    };
    let at = good
        .windows(marker.len())
        .position(|w| w == marker.as_slice())
        .expect("the result is in the file");
    let mut flipped = good.clone();
    flipped[at + 7] ^= 0x10;
    let cases = [
        ("truncated", good[..good.len() / 2].to_vec(), "state store"),
        ("bit-flipped", flipped, "damaged"),
    ];
    for (what, bytes, says) in cases {
        std::fs::write(&path, &bytes).unwrap();
        let log = fed.root.join(format!("coordinator-{what}.log"));
        let mut child = Command::new(coordinator_bin())
            .args(["run", "--dir"])
            .arg(&fed.coordinator_dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let status = wait_status(&mut child, Duration::from_secs(60), "coordinator", &log);
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            !status.success() && text.contains(says),
            "a {what} state file: {status}\n{}",
            tail(&log)
        );
        assert!(
            std::fs::read(&path).unwrap() == bytes,
            "the {what} file was changed"
        );
        let said = text.lines().find(|l| l.starts_with("Error"));
        eprintln!("{what}: refused: {}", said.unwrap_or_default());
    }
    // a hospital's model state with one bit of a weight flipped
    let state = fed.root.join("node-1/state/model-state.bin");
    let mut bytes = std::fs::read(&state).unwrap();
    let last = bytes.len() - 9;
    bytes[last] ^= 0x02;
    std::fs::write(&state, &bytes).unwrap();
    // hospital 1 started again as it was trained (its log replaces the training's)
    let mut child = common::start_hospital(&fed, 1);
    let log = fed.root.join("hospital-1.log");
    let status = wait_status(&mut child, Duration::from_secs(60), "hospital 1", &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        !status.success() && text.contains("model-state.bin is damaged"),
        "a hospital's damaged model state: {status}\n{}",
        tail(&log)
    );
    assert!(
        std::fs::read(&state).unwrap() == bytes,
        "the hospital's state was changed"
    );
    eprintln!(
        "hospital model state, one bit flipped: refused: {}",
        text.lines()
            .find(|l| l.contains("damaged"))
            .unwrap_or_default()
    );
}

/// The mode (a) serving coordinator's state directory on a tmpfs that another file fills while
/// it serves (issue 41): requests go on being served while the store can still record them
/// (redb writes into pages it already holds), then one is refused with the disk's error and
/// nothing of it is evaluated; the server keeps running, and once the file is removed the next
/// request is recorded and served with the plaintext network's labels, without a restart.
/// Every request served is in the audit log.
#[test]
fn a_full_state_disk_refuses_mode_a_requests_with_its_reason_and_serving_resumes_once_freed() {
    let Some(disk) = Tmpfs::or_skip(1024) else {
        return;
    };
    let fed = trained_collective();
    let addr = format!("127.0.0.1:{}", free_port());
    let log = fed.root.join("serve-disk.log");
    let mut server = Procs(vec![serve_collective(&fed, &addr, &log, Some(disk.path()))]);
    let _keyholders = Procs((1..=3).map(|i| keyholder(&fed, i, &addr)).collect());
    wait_for_line(&log, "served keys saved", LIMIT);
    let image = ["breastmnist:test:0"];
    let want = plaintext_labels(&fed, &image);
    let switches = || -> usize {
        (1..=3)
            .map(|i| log_of(&fed, i).matches("switching a served result").count())
            .sum()
    };

    let filler = disk.path().join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    let block = vec![0u8; 1 << 20];
    while f.write_all(&block).is_ok() {}
    drop(f);
    let (mut served, mut refusal) = (0, None);
    for k in 0..40 {
        let json = fed.root.join(format!("full-{k}.json"));
        let before = switches();
        let out = infer_at(&fed, &addr, &image, &json);
        if out.status.success() {
            assert_eq!(labels_of(&out, &json), want);
            served += 1;
            continue;
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            err.contains("cannot record this request") && err.contains("No space left on device"),
            "request {k} on the full disk: {err}"
        );
        // a keyholder logs its switch before it sends it: none may have started this one
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(switches(), before, "a refused request was evaluated");
        refusal = err
            .lines()
            .find(|l| l.contains("cannot record"))
            .map(String::from);
        break;
    }
    let refusal = refusal.expect("40 requests on a full disk, none refused");
    assert!(
        server.0[0].try_wait().unwrap().is_none(),
        "the server stopped on the full disk:\n{}",
        tail(&log)
    );

    std::fs::remove_file(&filler).unwrap();
    let t = Instant::now();
    let json = fed.root.join("freed.json");
    let out = infer_at(&fed, &addr, &image, &json);
    assert_eq!(
        labels_of(&out, &json),
        want,
        "served once the disk has space"
    );
    let resumed_s = t.elapsed().as_secs_f64();
    served += 1;
    let mut s = server.0.pop().unwrap();
    let _ = s.kill();
    let _ = s.wait();
    let recorded = Store::open_existing(&disk.path().join("state.redb"))
        .unwrap()
        .audit_log()
        .unwrap()
        .iter()
        .filter(|e| e.event == "inference-request")
        .count();
    assert_eq!(recorded, served, "every request served is in the audit log");
    eprintln!(
        "HEAL-SERVING-DISK served {} requests on the full disk, then refused one: {refusal}; \
         freed, the next was served in {resumed_s:.1} s; {recorded} requests in the audit log",
        served - 1
    );
}
