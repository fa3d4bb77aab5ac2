//! Where a diagnosis is evaluated, and which places this portal offers.

use super::Portal;

/// Where a diagnosis is evaluated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On this node, with the released weights (`--network`).
    Local,
    /// At the consortium's inference server.
    Remote,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "local" => Some(Mode::Local),
            "remote" => Some(Mode::Remote),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Remote => "remote",
        }
    }
}

/// The modes this portal offers, the default first.
pub fn modes(portal: &Portal) -> Vec<Mode> {
    let mut m = Vec::new();
    if portal.local().is_some() {
        m.push(Mode::Local);
    }
    if portal.config().remote.is_some() {
        m.push(Mode::Remote);
    }
    m
}
