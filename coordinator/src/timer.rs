//! What both tokio shells do instead of a fixed tick: sleep until their state machine's next
//! deadline (its `poll_timeout`), woken early when a call into the machine may have moved it.

use std::time::Instant;

use tokio::sync::Notify;

/// Waits until `due` (forever when `None`) or until `moved` is notified; true when `due` came.
pub async fn until_due(due: Option<Instant>, moved: &Notify) -> bool {
    let sleep = async {
        match due {
            Some(t) => tokio::time::sleep_until(t.into()).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = sleep => true,
        _ = moved.notified() => false,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn it_wakes_at_the_deadline_or_when_the_deadline_moves() {
        let moved = Notify::new();
        let due = Instant::now() + Duration::from_millis(20);
        assert!(until_due(Some(due), &moved).await, "the deadline came");
        moved.notify_one();
        assert!(!until_due(None, &moved).await, "woken by a moved deadline");
    }
}
