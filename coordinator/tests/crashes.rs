//! The coordinator killed at every phase boundary of a round and restarted from its state
//! directory (issue 41), across hosts: the coordinator and five hospitals each in a network
//! namespace of its own (`common::netns`), the real binaries. `HEAL_CRASH_AT=<point>:<round>`
//! (`coordinator::crash_point`) has the coordinator send itself SIGKILL exactly at a point —
//! after an update is accepted, before the switch request, mid-switch, between the switch and
//! the commit, between the commit and the results' delivery — once per point, in one
//! federation, each restart armed for the next. Checked after: every round committed exactly
//! once and in order, each by a quorum and re-encrypted by t switchers; every committed result,
//! as each hospital decrypted and applied it, is the same and is the weighted mean of exactly
//! the updates its record lists (the hospitals write what they encrypted and applied under
//! `HEAL_TRACE_DIR`, `client/src/node/trace.rs`); every hospital ends with the same model;
//! every process finished by itself; no namespace left behind. The figures
//! (time from each kill to the next commit) are printed for docs/RESULTS.md.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

mod common;
use common::netns::Hosts;
use common::{
    Procs, client_bin, committed_once, config_at, coordinator_bin, coordinator_logged, hospital_in,
    hospitals_finish, provisioned, same_final_models, tail, wait_exit, wait_status,
};

const LIMIT: Duration = Duration::from_secs(300);

/// Where the coordinator is killed, in a round's order, each in a round of its own.
const SCHEDULE: [(&str, u64); 5] = [
    ("update", 2),
    ("switch-request", 3),
    ("share", 5),
    ("commit", 7),
    ("deliver", 9),
];
const ROUNDS: u64 = 11;

#[test]
fn the_coordinator_killed_at_every_phase_boundary_resumes_and_no_round_is_lost_or_repeated() {
    let Some(hosts) = Hosts::or_skip("k", 6) else {
        return;
    };
    let fed = provisioned(&config_at(5, 3, 4, ROUNDS, &Hosts::address(0), 4433));
    let start = Instant::now();
    // each hospital writes what it encrypted and what it applied, for the aggregates' check
    let trace = fed.root.join("trace");
    let mut hospitals = Procs(
        (1..=5)
            .map(|i| {
                let mut command = hosts.command(i, &client_bin());
                command.env("HEAL_TRACE_DIR", &trace);
                hospital_in(command, &fed, i)
            })
            .collect(),
    );
    let mut figures = Vec::new();
    let mut committed = Vec::new();
    for (run, armed) in SCHEDULE.iter().map(Some).chain([None]).enumerate() {
        let env = armed.map(|(point, round)| format!("{point}:{round}"));
        let envs: Vec<(&str, &str)> = env
            .iter()
            .map(|e| (coordinator::crash_point::VAR, e.as_str()))
            .collect();
        let log = format!("coordinator-{run}.log");
        let (child, commits) =
            coordinator_logged(hosts.command(0, &coordinator_bin()), &fed, &log, &[], &envs);
        let mut coord = Procs(vec![child]);
        let log = fed.root.join(&log);
        // the first round this run commits, timed from the previous run's kill
        let first = commits.recv_timeout(LIMIT);
        if let Some(prev) = figures.last_mut() {
            let (_, _, killed_at, back): &mut (String, u64, Instant, Option<f64>) = prev;
            *back = first
                .as_ref()
                .ok()
                .map(|(_, at)| at.duration_since(*killed_at).as_secs_f64());
        }
        committed.extend(first.iter().map(|(r, _)| *r));
        match armed {
            Some((point, round)) => {
                let status = wait_status(&mut coord.0[0], LIMIT, "coordinator", &log);
                let killed_at = Instant::now();
                assert_eq!(
                    status.signal(),
                    Some(libc::SIGKILL),
                    "the coordinator armed at {point}:{round} ended with {status}:\n{}",
                    tail(&log)
                );
                committed.extend(commits.try_iter().map(|(r, _)| r));
                let expect = if *point == "deliver" {
                    *round
                } else {
                    round - 1
                };
                assert_eq!(
                    committed.last(),
                    Some(&expect),
                    "killed at {point}:{round}, the last round it committed"
                );
                figures.push((format!("{point}:{round}"), *round, killed_at, None));
            }
            None => {
                wait_exit(&mut coord.0[0], LIMIT, "coordinator", &log);
                committed.extend(commits.try_iter().map(|(r, _)| r));
            }
        }
    }
    hospitals_finish(&mut hospitals, &fed);
    assert_eq!(
        committed,
        (1..=ROUNDS).collect::<Vec<_>>(),
        "the commits the coordinators printed, across restarts"
    );
    let records = committed_once(&fed.coordinator_dir.join("state.redb"), ROUNDS, 4, 3);
    same_final_models(&fed, 5);
    let (err, margin) = aggregates_match_their_updates(&trace, &records, 5);
    eprintln!(
        "every committed aggregate is the weighted mean of exactly the updates it lists: largest \
         difference {err:.2e}; leaving one listed update out differs by at least {margin:.2e}"
    );
    for (what, round, _, back) in &figures {
        eprintln!(
            "killed at {what}: the next round committed {:.1} s after the kill (round {round} \
             {})",
            back.unwrap_or(f64::NAN),
            if what.starts_with("deliver") {
                "was committed before the kill"
            } else {
                "redone"
            }
        );
    }
    eprintln!(
        "{ROUNDS} rounds with {} coordinator kills in {:.1} s",
        SCHEDULE.len(),
        start.elapsed().as_secs_f64()
    );
    drop(hospitals);
    drop(hosts);
    assert_eq!(Hosts::left_behind("k"), Vec::<String>::new());
}

/// A trace file: little-endian f64 values.
fn read_f64s(path: &Path) -> Vec<f64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(8)
        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// Every committed round's result, as each of the `hospitals` decrypted and applied it (their
/// `HEAL_TRACE_DIR` files), is the same, and is the weighted mean of exactly the updates its
/// record lists (each hospital's last upload of that round). Returns the largest difference,
/// and the smallest by which the mean without one listed update differs (what the check would
/// see had the round summed another set).
fn aggregates_match_their_updates(
    trace: &Path,
    records: &[coordinator::store::RoundRecord],
    hospitals: u32,
) -> (f64, f64) {
    let (mut worst, mut margin) = (0f64, f64::INFINITY);
    let max_diff = |a: &[f64], b: &[f64]| {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f64, f64::max)
    };
    for rec in records {
        let r = rec.round;
        let updates: Vec<(u64, Vec<f64>)> = rec
            .participants
            .iter()
            .map(|&(h, w)| {
                let path = trace.join(format!("hospital-{h}/update-{r}.f64"));
                (w, read_f64s(&path))
            })
            .collect();
        let total: u64 = updates.iter().map(|(w, _)| w).sum();
        assert_eq!(total, rec.total_weight, "round {r}'s total weight");
        let mean = |leave_out: Option<usize>| {
            let kept: Vec<&(u64, Vec<f64>)> = (0..updates.len())
                .filter(|&i| Some(i) != leave_out)
                .map(|i| &updates[i])
                .collect();
            let total: u64 = kept.iter().map(|(w, _)| w).sum();
            let mut m = vec![0f64; updates[0].1.len()];
            for (w, u) in kept {
                for (m, x) in m.iter_mut().zip(u) {
                    *m += *w as f64 * x / total as f64;
                }
            }
            m
        };
        let expected = mean(None);
        let applied: Vec<Vec<f64>> = (1..=hospitals)
            .map(|h| read_f64s(&trace.join(format!("hospital-{h}/average-{r}.f64"))))
            .collect();
        for (i, a) in applied.iter().enumerate() {
            assert!(
                a == &applied[0],
                "hospital {} applied another round {r}",
                i + 1
            );
        }
        let err = max_diff(&applied[0], &expected);
        worst = worst.max(err);
        for out in 0..updates.len() {
            margin = margin.min(max_diff(&applied[0], &mean(Some(out))));
        }
    }
    assert!(
        worst * 100.0 < margin,
        "a committed aggregate is not the mean of the updates it lists: off by {worst:.2e}, \
         where leaving one out moves it by {margin:.2e}"
    );
    (worst, margin)
}
