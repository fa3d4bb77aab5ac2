//! Where a round's evaluation runs beside the next round's training (`evaluation.rs`): its
//! threads, at a lower priority than training's, and the evaluation while it runs.

use std::sync::Arc;

use anyhow::Context;
use protocol::message::RoundMetrics;
use tokio::task::JoinHandle;
use training::metrics::EvalReport;

/// Validation and (on a test round) test reports of one model.
pub(super) type Evaluated = (Option<EvalReport>, Option<EvalReport>);

/// An evaluation still running, and the round's metrics it completes.
pub(super) struct PendingEvaluation {
    pub(super) metrics: RoundMetrics,
    pub(super) task: JoinHandle<anyhow::Result<Evaluated>>,
}

/// The niceness of the evaluation threads: under contention Linux gives a thread at 10 about a
/// tenth of the CPU one at 0 gets, so training (on the default priority) goes first and the
/// evaluation fills what it leaves idle (the other core while the slowest hospital trains alone
/// on one thread in a simulation).
const EVALUATION_NICE: i32 = 10;

/// The threads evaluations run on: as many as training's, at `EVALUATION_NICE`.
pub(super) fn evaluation_pool() -> anyhow::Result<Arc<rayon::ThreadPool>> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("heal-eval-{i}"))
        .start_handler(|_| lower_priority())
        .build()
        .context("starting the evaluation threads")?;
    Ok(Arc::new(pool))
}

/// `HEAL_EVALUATION_DELAY_MS`, for tests: every evaluation starts this much later, so that a
/// test can have it still running when what follows arrives.
pub(super) fn evaluation_delay() -> std::time::Duration {
    let ms = std::env::var("HEAL_EVALUATION_DELAY_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    std::time::Duration::from_millis(ms)
}

fn lower_priority() {
    // Linux keeps a niceness per thread, and PRIO_PROCESS with 0 names the calling thread
    // SAFETY: setpriority reads no memory of ours
    #[cfg(target_os = "linux")]
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, EVALUATION_NICE) };
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn niceness() -> i32 {
        // SAFETY: getpriority reads no memory of ours
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn evaluations_run_below_trainings_priority_and_leave_the_callers_alone() {
        let before = niceness();
        let pool = evaluation_pool().unwrap();
        let inside = pool.install(niceness);
        // set to 10 (a process already nicer than that, without privileges, stays as it was)
        assert!(
            inside >= EVALUATION_NICE,
            "evaluation threads at niceness {inside}"
        );
        assert_eq!(niceness(), before, "the calling thread's priority changed");
    }
}
