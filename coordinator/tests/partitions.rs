//! A consortium across hosts under a partition and a hang (issue 41): the coordinator and five
//! hospitals each in a network namespace of its own (`common::netns`), the real binaries, and
//! one hospital cut off the network, or its process stopped (SIGSTOP), for longer than the
//! link's idle timeout (20 s) in the middle of the federation, then given back. Checked after: every round committed exactly once and in order, each by a
//! quorum, re-encrypted by t switchers; the cut hospital back in the rounds after the link
//! returns, having applied every result it missed (its final model is the others'); every
//! process finished by itself; no namespace left behind. Before the coordinator kept the last
//! rounds' results (`[federation] keep_results`), the cut hospital was left out of every later
//! round and ended the run with round 2's model as its final one. The figures (round
//! times, the rounds the hospital missed, how long it took to rejoin) are printed for
//! docs/RESULTS.md. Every wait is bounded.

use std::time::{Duration, Instant};

mod common;
use common::netns::Hosts;
use common::{
    Procs, client_bin, committed_once, config_at, coordinator_bin, coordinator_in, hospital_in,
    hospitals_finish, provisioned, same_final_models, tail, wait_exit,
};

const LIMIT: Duration = Duration::from_secs(600);
const CUT: Duration = Duration::from_secs(30);

#[test]
fn a_hospital_cut_off_mid_federation_rejoins_and_no_round_is_lost_or_repeated() {
    schedule("p", "partition", |hosts, _, up| hosts.link(5, up).unwrap());
}

/// Hospital 5's process stopped (SIGSTOP: a hung machine, its connection silent, nothing
/// closed) for the same time, then resumed (SIGCONT).
#[test]
fn a_hospital_hung_mid_federation_resumes_and_no_round_is_lost_or_repeated() {
    schedule("s", "hang", |_, procs, up| {
        let pid = procs.0[5].id() as libc::pid_t;
        let signal = if up { libc::SIGCONT } else { libc::SIGSTOP };
        // SAFETY: a signal to a child this test started and still holds
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0, "signal {signal}");
    });
}

/// The federation with hospital 5 taken away after round 2 by `fault(…, false)` for `CUT` and
/// given back by `fault(…, true)`; `tag` names the namespaces, `what` the figures' line.
fn schedule(tag: &str, what: &str, fault: impl Fn(&Hosts, &Procs, bool)) {
    // rounds of this small federation take about half a second: enough of them that the
    // federation runs on well after the hospital returns (at least 34 rounds, since it can miss
    // at most the 64 results kept; 150 rounds until 30 November 2026 took 232 s of CI for the
    // two schedules, which run side by side)
    const ROUNDS: u64 = 100;
    // host 0 is the coordinator, host i hospital i
    let Some(hosts) = Hosts::or_skip(tag, 6) else {
        return;
    };
    // the rounds the cut hospital misses depend on the machine's speed (31 on a quiet 2-core
    // host, where the default keeps 32; CI once saw more and the hospital, rightly, stopped as
    // unable to catch up): keeping 64 leaves twice the margin wherever the test runs
    let cfg = config_at(5, 3, 4, ROUNDS, &Hosts::address(0), 4433).replacen(
        "[federation]\n",
        "[federation]\nkeep_results = 64\n",
        1,
    );
    assert!(cfg.contains("keep_results = 64"));
    let fed = provisioned(&cfg);
    let start = Instant::now();
    let (coord, commits) = coordinator_in(hosts.command(0, &coordinator_bin()), &fed);
    let mut procs = Procs(vec![coord]);
    for i in 1..=5 {
        procs
            .0
            .push(hospital_in(hosts.command(i, &client_bin()), &fed, i));
    }
    let mut committed: Vec<(u64, Instant)> = Vec::new();
    let next = |committed: &mut Vec<(u64, Instant)>| {
        let (r, at) = commits
            .recv_timeout(LIMIT)
            .expect("a round committed within the limit");
        committed.push((r, at));
        r
    };
    while next(&mut committed) < 2 {}
    // hospital 5 goes away after round 2, for longer than the idle timeout
    fault(&hosts, &procs, false);
    let cut_at = Instant::now();
    std::thread::sleep(CUT);
    fault(&hosts, &procs, true);
    let back_at = Instant::now();
    let mut coord = procs.0.remove(0);
    wait_exit(
        &mut coord,
        LIMIT,
        "coordinator",
        &fed.root.join("coordinator.log"),
    );
    while let Ok((r, at)) = commits.try_recv() {
        committed.push((r, at));
    }
    hospitals_finish(&mut procs, &fed);
    let rounds = committed_once(&fed.coordinator_dir.join("state.redb"), ROUNDS, 4, 3);
    let with_5: Vec<u64> = rounds
        .iter()
        .filter(|r| r.participants.iter().any(|p| p.0 == 5))
        .map(|r| r.round)
        .collect();
    let missed: Vec<u64> = (1..=ROUNDS).filter(|r| !with_5.contains(r)).collect();
    assert!(
        with_5.contains(&ROUNDS),
        "hospital 5 is back in the last round (it was in {with_5:?}):\n{}",
        tail(&fed.root.join("hospital-5.log"))
    );
    // it caught up by applying each missed round's result: it ends with the others' model
    same_final_models(&fed, 5);
    // the figures, for docs/RESULTS.md
    let at = |round: u64| committed.iter().find(|(r, _)| *r == round).map(|(_, t)| *t);
    let rejoined = missed
        .last()
        .and_then(|&m| at(m + 1))
        .map(|t| t.saturating_duration_since(back_at));
    eprintln!(
        "{what}: {ROUNDS} rounds in {:.1} s; hospital 5 away for {:.0} s after round 2, missed \
         rounds {missed:?}; its first round back committed {:.1} s after it returned; \
         round commits at {:?} s",
        start.elapsed().as_secs_f64(),
        back_at.duration_since(cut_at).as_secs_f64(),
        rejoined.map_or(f64::NAN, |d| d.as_secs_f64()),
        committed
            .iter()
            .map(|(r, t)| (
                *r,
                (t.duration_since(start).as_secs_f64() * 10.0).round() / 10.0
            ))
            .collect::<Vec<_>>()
    );
    drop(procs);
    drop(hosts);
    assert_eq!(Hosts::left_behind(tag), Vec::<String>::new());
}
