//! Messages to one peer in the order they were decided. A shell that spawned one task per send
//! let a small message overtake a large one to the same peer (a head run's last relayed shares,
//! many megabytes, and the switch request right after them). An [`Outbox`] has one writer per
//! connection that opens each message's stream only after the one before is sent, and the peer
//! accepts streams in the order they were opened.

use std::sync::Arc;

use tokio::sync::mpsc;
use tracing::warn;

use crate::link::Link;
use crate::message::Body;

/// Items of one message: its own, then (possibly) items shared with messages to other peers,
/// sent from one buffer rather than one copy per peer.
pub struct Items {
    pub own: Vec<Vec<u8>>,
    pub shared: Option<Arc<Vec<Vec<u8>>>>,
}

impl From<Vec<Vec<u8>>> for Items {
    fn from(own: Vec<Vec<u8>>) -> Self {
        Items { own, shared: None }
    }
}

/// The queue of what is to be sent on one connection. Sending stops when the outbox is dropped
/// (after what was queued has left) or when the connection fails (the rest is dropped, each
/// failure logged).
pub struct Outbox {
    queue: mpsc::UnboundedSender<(Body, Items)>,
}

impl Outbox {
    /// An outbox for `link`, with its writer task on the current tokio runtime.
    pub fn spawn(link: Link) -> Self {
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(writer(link, queued));
        Outbox { queue }
    }

    /// Queues a message with its items; it leaves after everything queued before it.
    pub fn post(&self, body: Body, items: impl Into<Items>) {
        // the writer runs until this sender is dropped, so the queue is open
        let _ = self.queue.send((body, items.into()));
    }
}

async fn writer(link: Link, mut queued: mpsc::UnboundedReceiver<(Body, Items)>) {
    while let Some((body, items)) = queued.recv().await {
        let kind = body.kind();
        let shared = items.shared.iter().flat_map(|s| s.iter());
        let sent = async {
            let mut s = link.open(0, body).await?;
            for item in items.own.iter().chain(shared) {
                s.item(item).await?;
            }
            s.finish().await
        };
        if let Err(e) = sent.await {
            warn!(peer = %link.peer(), message = kind, "cannot send: {e}");
        }
    }
}
