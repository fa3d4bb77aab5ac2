//! The coordinator killed at every phase boundary of a round and restarted from its state
//! directory (issue 41), across hosts: the coordinator and five hospitals each in a network
//! namespace of its own (`common::netns`), the real binaries. `HEAL_CRASH_AT=<point>:<round>`
//! (`coordinator::crash_point`) has the coordinator send itself SIGKILL exactly at a point —
//! after an update is accepted, before the switch request, mid-switch, between the switch and
//! the commit, between the commit and the results' delivery — once per point, in one
//! federation, each restart armed for the next. Checked after: every round committed exactly
//! once and in order, each by a quorum and re-encrypted by t switchers; every hospital ends with
//! the same model; every process finished by itself; no namespace left behind. The figures
//! (time from each kill to the next commit) are printed for docs/RESULTS.md.

use std::os::unix::process::ExitStatusExt;
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
    let mut hospitals = Procs(
        (1..=5)
            .map(|i| hospital_in(hosts.command(i, &client_bin()), &fed, i))
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
    committed_once(&fed.coordinator_dir.join("state.redb"), ROUNDS, 4, 3);
    same_final_models(&fed, 5);
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
