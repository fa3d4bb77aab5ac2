//! What goes into the federation and what comes out: the [`Event`]s the shell reports and the
//! [`Action`]s it carries out. [`Action::RequestSwitch`] and [`Action::Deliver`] are the
//! engine's decisions; [`crate::federation::Federation`] completes them with the round's data
//! into [`Action::SwitchRequest`] and [`Action::Commit`], which are what the shell sees.

use std::time::{Duration, Instant};

use protocol::message::Phase;
use protocol::transcript::Contribution;

use crate::store::{RoundRecord, StoredResult};

/// Something that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A hospital connected and said hello; it holds the global model of `last_round`, whose
    /// updates have `items` items.
    Joined {
        hospital: u32,
        last_round: u64,
        items: u32,
        now: Instant,
    },
    /// Its connection ended.
    Left { hospital: u32, now: Instant },
    /// Its key shares were validated and stored.
    KeySharesStored { hospital: u32 },
    /// Its sealed Shamir shares were stored for relaying.
    SharesDealt { hospital: u32 },
    /// It formed its threshold secret.
    SetupDone { hospital: u32, now: Instant },
    /// Its whole update for `round` was validated and folded into the aggregate.
    UpdateFolded {
        hospital: u32,
        round: u64,
        weight: u64,
        now: Instant,
    },
    /// Its switching shares for `round`, attempt `attempt`, were folded.
    SwitchSharesFolded {
        hospital: u32,
        round: u64,
        attempt: u32,
        now: Instant,
    },
    /// The layer below committed `round` and sent the results.
    Committed { round: u64, now: Instant },
    /// A hospital found the committed `round`'s result malformed and did not apply it.
    Alarm {
        hospital: u32,
        round: u64,
        reason: String,
    },
    /// Time passes (deadlines).
    Tick { now: Instant },
}

/// Something the layer below must do.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    Welcome {
        to: u32,
        phase: Phase,
    },
    /// Refuse the connection of `to` and close it: it cannot take part as configured.
    Reject {
        to: u32,
        reason: String,
    },
    /// Tell a hospital why it takes no part, without closing its connection.
    Notify {
        to: u32,
        reason: String,
    },
    /// Persist the federation's update size, settled by a majority of the hospitals.
    SettleItems {
        items: u32,
    },
    /// Make (once) and send the collective public key and everyone's public keys.
    SendSetupKeys {
        to: Vec<u32>,
    },
    /// Send the sealed Shamir shares addressed to `to`.
    RelayShares {
        to: u32,
    },
    /// Start collecting `round` (fresh aggregate) and announce it.
    StartRound {
        round: u64,
        to: Vec<u32>,
        deadline: Duration,
    },
    /// Announce the running round to a hospital that joined late.
    AnnounceRound {
        round: u64,
        to: u32,
        deadline: Duration,
    },
    /// Close the aggregate of `round` (once) and ask `active` for switching shares towards the
    /// consortium receiving key; a new attempt discards the shares of earlier ones.
    RequestSwitch {
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        weights: Vec<(u32, u64)>,
    },
    /// Make the round's result (switched aggregate, or plaintext sum), commit the round with it,
    /// send it to `targets`, then report [`Event::Committed`].
    Deliver {
        round: u64,
        targets: Vec<u32>,
        weights: Vec<(u32, u64)>,
        switchers: Vec<u32>,
    },
    /// Send `active` the switch request of (`round`, `attempt`): the contributions they switch,
    /// as their hospitals signed them, and the aggregate's `count` ciphertexts.
    SwitchRequest {
        round: u64,
        attempt: u32,
        active: Vec<u32>,
        contributions: Vec<Contribution>,
        count: u32,
    },
    /// Commit `round` with its result and record (the store's phase then `phase`), send the
    /// result to `targets`, then report [`Event::Committed`].
    Commit {
        round: u64,
        phase: Phase,
        result: Box<StoredResult>,
        record: Box<RoundRecord>,
        targets: Vec<u32>,
    },
    /// Send the results of the committed rounds after `after`, in order (to a hospital that
    /// missed them: it applies each in turn and holds the committed model).
    SendStoredResults {
        to: u32,
        after: u64,
    },
    Finish {
        to: Vec<u32>,
    },
    /// An audit log entry.
    Audit {
        hospital: Option<u32>,
        round: u64,
        event: &'static str,
        detail: String,
    },
}
