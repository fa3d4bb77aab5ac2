//! Failed connections (no or a foreign certificate, a wrong protocol, a handshake that times
//! out) come from anyone who can reach the port. Writing an audit row for each would let a
//! stranger fill the disk and the fsync queue, so they are counted in memory and audited in
//! aggregate: the first of a quiet window at once, the rest as one row per window. Sans-IO:
//! the caller says what time it is and writes what it is given.

use std::time::{Duration, Instant};

/// How often at most a row is written for refused connections.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Refused connections seen but not yet audited.
#[derive(Debug, Default)]
pub struct RefusalLog {
    /// when the last row was handed out
    last_row: Option<Instant>,
    /// refusals since, and the last one's detail
    pending: u64,
    last_detail: String,
}

impl RefusalLog {
    /// A connection was refused: the row to write now, if the window allows one.
    pub fn refused(&mut self, now: Instant, detail: String) -> Option<String> {
        if self.window_open(now) {
            self.last_row = Some(now);
            return Some(detail);
        }
        self.pending += 1;
        self.last_detail = detail;
        None
    }

    /// Called periodically: the aggregate row of the refusals held back, once the window ended.
    pub fn flush(&mut self, now: Instant) -> Option<String> {
        if self.pending == 0 || !self.window_open(now) {
            return None;
        }
        let row = format!(
            "{} more connections refused within {} s; the last: {}",
            self.pending,
            WINDOW.as_secs(),
            self.last_detail
        );
        self.pending = 0;
        self.last_detail.clear();
        self.last_row = Some(now);
        Some(row)
    }

    fn window_open(&self, now: Instant) -> bool {
        self.last_row
            .is_none_or(|t| now.saturating_duration_since(t) >= WINDOW)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_writes_one_row_per_window() {
        let t0 = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(t0, "a".into()).as_deref(), Some("a"));
        let mut rows = 0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_millis(i);
            rows += log.refused(now, format!("x{i}")).is_some() as usize;
            rows += log.flush(now).is_some() as usize;
        }
        assert_eq!(rows, 0, "10 000 refusals in 10 s: no row beyond the first");
        let row = log.flush(t0 + WINDOW).unwrap();
        assert!(
            row.starts_with("10000 more") && row.ends_with("x9999"),
            "{row}"
        );
        assert_eq!(log.flush(t0 + 3 * WINDOW), None, "nothing held back");
        assert!(log.refused(t0 + 3 * WINDOW, "b".into()).is_some());
    }
}
