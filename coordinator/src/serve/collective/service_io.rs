//! What the mode (a) service ([`super::Service`]) is set up with, is fed and asks its shell to
//! do, and what it holds of a request being served.

use protocol::serve::collective::CollectiveRequest;
use protocol::serve::head::HeadTraining;
use protocol::{Body, FederationId};

use super::ServingConfig;
use super::head::{HeadRun, RunJob};
use super::requests::SwitchState;
use super::saved::SavedServing;

/// The shell's number for a connection.
pub type Conn = u64;

/// What the service is set up with.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    pub federation: FederationId,
    pub serving: ServingConfig,
    /// Most images in one request.
    pub max_images: u32,
    /// Head training instead of serving a model: how the head is trained.
    pub head: Option<HeadTraining>,
    /// Most examples one contribution may carry (they are held in memory while trained on).
    pub max_head_examples: u64,
}

/// What the service is fed.
pub enum Event {
    /// A keyholder's first message on connection `conn`.
    KeyholderHello {
        conn: Conn,
        hospital: u32,
        setup: Option<[u8; 32]>,
        ready: bool,
    },
    /// Connection `conn` of `hospital` closed.
    Closed { conn: Conn, hospital: u32 },
    /// A stream [`Service::admit`] took, read whole: its header and exactly the items it said.
    Message {
        conn: Conn,
        hospital: u32,
        body: Body,
        items: Vec<Vec<u8>>,
    },
    /// A stream [`Service::admit`] took could not be read whole: what it reserved is released.
    Unread { hospital: u32, body: Body },
    /// A head run set up from a contribution ([`Action::BuildRun`]), or why not.
    RunBuilt(Result<Box<HeadRun>, String>),
    /// A head's step computed ([`Action::Step`]).
    StepDone {
        run: Box<HeadRun>,
        result: Result<(), String>,
    },
}

/// What the shell is to do.
// Send (a whole Body) is the common action; boxing it would allocate for every message
#[allow(clippy::large_enum_variant)]
pub enum Action {
    Send {
        conn: Conn,
        body: Body,
        items: Vec<Vec<u8>>,
    },
    /// Send `first`, then `items` (shared by every keyholder it goes to: a contribution is
    /// gigabytes).
    SendShared {
        conn: Conn,
        body: Body,
        first: Vec<Vec<u8>>,
        items: std::sync::Arc<Vec<Vec<u8>>>,
    },
    /// Close a connection (a keyholder connected again on another).
    Close { conn: Conn, reason: &'static str },
    /// Set a head run up from a contribution off the service (it decodes gigabytes), then feed
    /// [`Event::RunBuilt`].
    BuildRun(Box<RunJob>),
    /// Compute a head's next step off the service, then feed [`Event::StepDone`].
    Step(Box<HeadRun>),
    /// Save the served state, so a restart serves the same setup.
    Save(Box<SavedServing>),
    Audit {
        hospital: Option<u32>,
        event: &'static str,
        detail: String,
    },
}

/// A request being served: who asked, on which connection, what it signed (mode a), and its
/// switch.
pub(super) struct Request {
    pub conn: Conn,
    pub request_id: u64,
    pub requester: u32,
    pub signed: Option<CollectiveRequest>,
    pub evaluate_us: u64,
    pub validate_us: u64,
    pub switch: SwitchState,
    /// a plan cut into segments: the refresh whose shares are being gathered
    pub refresh: Option<super::segments::RefreshRound>,
}
