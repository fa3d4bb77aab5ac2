//! Sign-in attempts, limited: failures are counted per user name and per client address over a
//! window, and a name or address with too many is refused (429) until the window passes, before
//! any password hash is computed; argon2 (19 MiB and tens of milliseconds each) runs at most
//! [`ARGON2_AT_ONCE`] at a time, so sign-in attempts cannot pin the machine's cores or memory.
//! Memory is bounded: at most [`MAX_TRACKED`] names and addresses are tracked.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins for one user name within [`WINDOW`] before it is locked.
pub const NAME_FAILURES: usize = 5;
/// Failed sign-ins from one address within [`WINDOW`] before it is refused.
pub const ADDRESS_FAILURES: usize = 20;
pub const WINDOW: Duration = Duration::from_secs(15 * 60);
/// Password checks running at once.
pub const ARGON2_AT_ONCE: usize = 2;
/// Names and addresses tracked at once (the oldest is forgotten beyond).
pub const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Name(String),
    Address(IpAddr),
}

/// The portal's sign-in limits.
pub struct SigninLimit {
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
    /// permits for password checks
    pub argon2: tokio::sync::Semaphore,
}

impl Default for SigninLimit {
    fn default() -> Self {
        Self {
            failures: Mutex::new(HashMap::new()),
            argon2: tokio::sync::Semaphore::new(ARGON2_AT_ONCE),
        }
    }
}

impl SigninLimit {
    fn keys(name: &str, address: Option<IpAddr>) -> Vec<(Key, usize)> {
        let mut k = vec![(Key::Name(name.to_string()), NAME_FAILURES)];
        if let Some(a) = address {
            k.push((Key::Address(a), ADDRESS_FAILURES));
        }
        k
    }

    /// `Err(wait)` while `name` or `address` has used up its failures.
    pub fn check(&self, name: &str, address: Option<IpAddr>, now: Instant) -> Result<(), Duration> {
        let mut map = self.lock();
        let mut wait = None;
        for (key, limit) in Self::keys(name, address) {
            if let Some(times) = map.get_mut(&key) {
                prune(times, now);
                if times.len() >= limit {
                    let free = times[times.len() - limit] + WINDOW;
                    let w = free.saturating_duration_since(now);
                    wait = Some(wait.map_or(w, |x: Duration| x.max(w)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Counts a failed sign-in of `name` from `address`.
    pub fn failed(&self, name: &str, address: Option<IpAddr>, now: Instant) {
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED {
            map.retain(|_, t| {
                prune(t, now);
                !t.is_empty()
            });
            if map.len() >= MAX_TRACKED {
                // still full: forget the key whose last failure is oldest
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, t)| t.back().copied())
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        for (key, limit) in Self::keys(name, address) {
            let times = map.entry(key).or_default();
            prune(times, now);
            times.push_back(now);
            // only the latest `limit` matter
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    /// A successful sign-in clears its name's failures (not its address's).
    pub fn succeeded(&self, name: &str) {
        self.lock().remove(&Key::Name(name.to_string()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Instant>>> {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant) {
    while times
        .front()
        .is_some_and(|&t| now.saturating_duration_since(t) >= WINDOW)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_locks_after_its_failures_and_frees_after_the_window() {
        let l = SigninLimit::default();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.7".parse().unwrap();
        for i in 0..NAME_FAILURES {
            assert!(l.check("alice", Some(ip), t0).is_ok(), "attempt {i}");
            l.failed("alice", Some(ip), t0);
        }
        let wait = l.check("alice", Some(ip), t0).unwrap_err();
        assert_eq!(wait, WINDOW);
        // another name from the same address is still allowed (the address has room)
        assert!(l.check("bob", Some(ip), t0).is_ok());
        assert!(l.check("alice", Some(ip), t0 + WINDOW).is_ok());
    }

    #[test]
    fn one_address_cannot_try_many_names() {
        let l = SigninLimit::default();
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.8".parse().unwrap();
        for i in 0..ADDRESS_FAILURES {
            l.failed(&format!("user{i}"), Some(ip), t0);
        }
        assert!(l.check("someone-new", Some(ip), t0).is_err());
        assert!(
            l.check("someone-new", Some("10.0.0.9".parse().unwrap()), t0)
                .is_ok()
        );
    }

    #[test]
    fn success_clears_the_name_and_memory_stays_bounded() {
        let l = SigninLimit::default();
        let t0 = Instant::now();
        for _ in 0..NAME_FAILURES - 1 {
            l.failed("carol", None, t0);
        }
        l.succeeded("carol");
        for _ in 0..NAME_FAILURES - 1 {
            l.failed("carol", None, t0);
        }
        assert!(l.check("carol", None, t0).is_ok());
        for i in 0..MAX_TRACKED + 50 {
            l.failed(&format!("n{i}"), None, t0);
        }
        assert!(l.lock().len() <= MAX_TRACKED);
    }
}
