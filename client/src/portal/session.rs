//! Sessions in memory: a random 256-bit id in an HttpOnly, SameSite=Strict cookie, a CSRF
//! token per session that every POST must echo, an idle timeout and an absolute lifetime.
//! Sign-in itself runs in an anonymous session so the sign-in form is CSRF-protected too; a
//! successful sign-in replaces that session with a new id (no session fixation).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::{PortalError, random_hex};

/// The session cookie's name.
pub const COOKIE: &str = "heal_session";
/// Bounds memory when someone keeps opening the sign-in page.
const MAX_SESSIONS: usize = 10_000;

/// One session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The signed-in user; `None` for the anonymous session of the sign-in form.
    pub user: Option<String>,
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// All sessions of the portal.
#[derive(Debug)]
pub struct Sessions {
    map: HashMap<String, Session>,
    idle: Duration,
    lifetime: Duration,
}

impl Sessions {
    pub fn new(idle: Duration, lifetime: Duration) -> Self {
        Self {
            map: HashMap::new(),
            idle,
            lifetime,
        }
    }

    fn expired(&self, s: &Session, now: Instant) -> bool {
        now.saturating_duration_since(s.last_seen) > self.idle
            || now.saturating_duration_since(s.created) > self.lifetime
    }

    /// A new session; returns its id.
    pub fn create(
        &mut self,
        user: Option<String>,
        now: Instant,
    ) -> Result<(String, Session), PortalError> {
        if self.map.len() >= MAX_SESSIONS {
            self.map.retain(|_, s| {
                now.saturating_duration_since(s.last_seen) <= self.idle
                    && now.saturating_duration_since(s.created) <= self.lifetime
            });
            if self.map.len() >= MAX_SESSIONS {
                // drop anonymous sessions first: a flood of sign-in page loads must not sign
                // anyone out
                self.map.retain(|_, s| s.user.is_some());
            }
        }
        let id = random_hex(32)?;
        let s = Session {
            user,
            csrf: random_hex(32)?,
            created: now,
            last_seen: now,
        };
        self.map.insert(id.clone(), s.clone());
        Ok((id, s))
    }

    /// The live session `id`, its idle clock restarted; an expired one is removed.
    pub fn get(&mut self, id: &str, now: Instant) -> Option<Session> {
        let expired = self.expired(self.map.get(id)?, now);
        if expired {
            self.map.remove(id);
            return None;
        }
        let s = self.map.get_mut(id)?;
        s.last_seen = now;
        Some(s.clone())
    }

    pub fn remove(&mut self, id: &str) {
        self.map.remove(id);
    }

    pub fn idle(&self) -> Duration {
        self.idle
    }
}

impl Session {
    /// Whether `token` is this session's CSRF token (constant time in the token's bytes).
    pub fn csrf_matches(&self, token: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), token.as_bytes())
    }
}

/// Compares without an early exit, so the time taken does not reveal how many leading bytes
/// of a guessed token were right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The session id from a `Cookie` header, if it is shaped like one of ours.
pub fn session_id_from_cookies(header: &str) -> Option<&str> {
    header
        .split(';')
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The `Set-Cookie` value for session `id`. No `Secure` flag unless asked: the portal binds
/// to 127.0.0.1 over plain HTTP by default, and behind a TLS proxy the operator sets it.
pub fn set_cookie(id: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}
