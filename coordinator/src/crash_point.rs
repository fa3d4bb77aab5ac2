//! Named points between a round's phases at which a fault test can have the coordinator killed
//! exactly there: `HEAL_CRASH_AT=<point>:<round>` (for example `commit:3`) makes the process
//! send itself SIGKILL when it reaches that point of that round — no destructor runs, nothing is
//! flushed, as when the machine loses power. A test cannot time an outside `kill` to land
//! between two steps a few milliseconds apart; this lands there every time. Unset (always, in
//! production) it costs one comparison per point.
//!
//! The points, in a round's order:
//! - `update`: an update of the round is read, checked and handed to the aggregate;
//! - `switch-request`: the round's updates are accepted, before the switch request leaves;
//! - `share`: a switching share of the round is read, before the round's switch completes;
//! - `commit`: the shares are combined, before the round is committed to the store;
//! - `deliver`: the round is committed, before its result is sent to any hospital.

use std::sync::OnceLock;

use tracing::error;

/// The points a test may name.
pub const POINTS: [&str; 5] = ["update", "switch-request", "share", "commit", "deliver"];

/// The environment variable that names the point.
pub const VAR: &str = "HEAL_CRASH_AT";

/// (point, round) parsed from `HEAL_CRASH_AT`; `None` when unset.
fn armed() -> Option<&'static (String, u64)> {
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    ARMED
        .get_or_init(|| std::env::var(VAR).ok().and_then(|v| parse(&v).ok()))
        .as_ref()
}

/// `point:round`, the point one of [`POINTS`].
pub fn parse(text: &str) -> Result<(String, u64), String> {
    let (point, round) = text
        .split_once(':')
        .ok_or_else(|| format!("{VAR}={text}: expected <point>:<round>, e.g. commit:3"))?;
    if !POINTS.contains(&point) {
        return Err(format!(
            "{VAR}={text}: unknown point {point:?} (one of {POINTS:?})"
        ));
    }
    let round = round
        .parse()
        .map_err(|_| format!("{VAR}={text}: {round:?} is not a round number"))?;
    Ok((point.to_string(), round))
}

/// Checks `HEAL_CRASH_AT` at start, so that a typo fails the run instead of never firing.
pub fn check_env() -> Result<(), String> {
    match std::env::var(VAR) {
        Ok(v) => parse(&v).map(|_| ()),
        Err(_) => Ok(()),
    }
}

/// Kills this process with SIGKILL if a test named this point of this round.
pub fn reached(point: &str, round: u64) {
    if let Some((p, r)) = armed()
        && p == point
        && *r == round
    {
        error!("{VAR}={point}:{round} reached: killing this process (SIGKILL) for a fault test");
        kill_self();
    }
}

#[cfg(unix)]
fn kill_self() -> ! {
    // SAFETY: signalling this process; SIGKILL cannot be caught, so this does not return
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    std::process::abort()
}

#[cfg(not(unix))]
fn kill_self() -> ! {
    std::process::abort()
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn points_and_rounds_parse_and_anything_else_is_refused_with_the_choices() {
        assert_eq!(parse("commit:3"), Ok(("commit".into(), 3)));
        assert_eq!(
            parse("switch-request:12"),
            Ok(("switch-request".into(), 12))
        );
        let e = parse("comit:3").unwrap_err();
        assert!(e.contains("unknown point") && e.contains("commit"), "{e}");
        assert!(parse("commit").unwrap_err().contains("<point>:<round>"));
        assert!(
            parse("commit:x")
                .unwrap_err()
                .contains("not a round number")
        );
    }
}
