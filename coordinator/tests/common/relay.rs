//! A wide-area link between the test's hosts without netem (this kernel has no such qdisc): a
//! user-space UDP relay that forwards each peer's datagrams to an upstream address and back,
//! holding each one for the profile's one-way delay plus a uniform jitter, dropping a share of
//! them, and pacing each peer's direction to the profile's rate (a 20 Mbit/s line queues what
//! a hospital sends faster). QUIC runs over it as over a WAN: reordering, loss and queueing
//! included. It runs on a thread of its own that enters the host's network namespace, so the
//! peers see it at the host's address; it stops and closes its sockets when dropped. The
//! drops are drawn from a seeded generator: a run is replayable.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What the link does to each datagram, per direction.
#[derive(Clone, Copy, Debug)]
pub struct Profile {
    /// One-way delay (half the round-trip time it adds).
    pub delay: Duration,
    /// Up to this much more, uniform.
    pub jitter: Duration,
    /// The share of datagrams dropped.
    pub loss: f64,
    /// Bits per second per peer and direction (0: unlimited).
    pub rate_bps: u64,
}

impl Profile {
    /// The WAN: 50 ms round trip, 1% loss, 20 Mbit/s per hospital.
    pub const WAN: Self = Self {
        delay: Duration::from_millis(25),
        jitter: Duration::from_millis(2),
        loss: 0.01,
        rate_bps: 20_000_000,
    };
}

/// Datagrams seen, dropped and forwarded, both directions together.
#[derive(Debug, Default)]
pub struct Counts {
    pub seen: AtomicU64,
    pub dropped: AtomicU64,
    pub bytes: AtomicU64,
}

/// A running relay; stopped on drop.
pub struct Relay {
    pub counts: Arc<Counts>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// At most this many peers at once (a test has a handful; more is a bug, not a load).
const MAX_PEERS: usize = 64;

/// splitmix64: seeded, replayable drops and jitter (and the soak's schedule).
pub struct Draw(pub u64);

impl Draw {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Datagrams a line holds before it drops (a router's buffer: 0.5 s at 20 Mbit/s).
const QUEUE: usize = 1024;

/// One direction of one peer: its own drops, jitter, line and queue, delivered in order (a
/// jitter that reordered datagrams independently would look like loss to QUIC, which no
/// real path of one queue does).
struct Line {
    profile: Profile,
    draw: Draw,
    /// when the line is free again (pacing)
    free: Instant,
    /// when the last datagram leaves the far end (nothing overtakes it)
    last: Instant,
    queue: mpsc::Sender<(Instant, Vec<u8>)>,
}

impl Line {
    /// A line to `to` through `sock`, its sender running on the relay's runtime.
    fn new(profile: Profile, seed: u64, sock: Arc<UdpSocket>, to: SocketAddr) -> Self {
        let (queue, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
        tokio::spawn(async move {
            while let Some((at, data)) = rx.recv().await {
                tokio::time::sleep_until(at).await;
                let _ = sock.send_to(&data, to).await;
            }
        });
        let now = Instant::now();
        Self {
            profile,
            draw: Draw(seed),
            free: now,
            last: now,
            queue,
        }
    }

    /// Sends `data` down the line, or drops it (lost, or the queue is full).
    fn push(&mut self, data: &[u8], counts: &Counts) {
        counts.seen.fetch_add(1, Ordering::Relaxed);
        if self.draw.unit() < self.profile.loss || self.queue.capacity() == 0 {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let now = Instant::now();
        let start = self.free.max(now);
        let on_wire = match self.profile.rate_bps {
            0 => Duration::ZERO,
            r => Duration::from_secs_f64(data.len() as f64 * 8.0 / r as f64),
        };
        self.free = start + on_wire;
        let jitter = self.profile.jitter.mul_f64(self.draw.unit());
        self.last = (self.free + self.profile.delay + jitter).max(self.last);
        if self.queue.try_send((self.last, data.to_vec())).is_ok() {
            counts.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        } else {
            counts.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Relay {
    /// Relays datagrams arriving at `listen` (inside network namespace `netns`, or this one)
    /// to `upstream` and the answers back, through `profile`, drawing from `seed`.
    pub fn start(
        netns: Option<&str>,
        listen: SocketAddr,
        upstream: SocketAddr,
        profile: Profile,
        seed: u64,
    ) -> std::io::Result<Self> {
        let counts = Arc::new(Counts::default());
        let (stop, stopped) = oneshot::channel();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let netns = netns.map(str::to_string);
        let c = counts.clone();
        let thread = std::thread::spawn(move || {
            let setup = || -> std::io::Result<(tokio::runtime::Runtime, UdpSocket)> {
                if let Some(ns) = &netns {
                    enter(ns)?;
                }
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let front = rt.block_on(UdpSocket::bind(listen))?;
                Ok((rt, front))
            };
            match setup() {
                Ok((rt, front)) => {
                    let _ = ready_tx.send(Ok(()));
                    rt.block_on(serve(front, upstream, profile, seed, c, stopped));
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            }
        });
        let up = ready
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| std::io::Error::other(format!("the relay did not start: {e}")))?;
        up?;
        Ok(Self {
            counts,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Moves this thread into network namespace `ns` (made by `ip netns add`).
fn enter(ns: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{ns}"))?;
    // SAFETY: setns on a valid namespace descriptor changes only this thread's namespace.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

async fn serve(
    front: UdpSocket,
    upstream: SocketAddr,
    profile: Profile,
    seed: u64,
    counts: Arc<Counts>,
    mut stopped: oneshot::Receiver<()>,
) {
    let front = Arc::new(front);
    // per peer: its line up (through a socket of its own towards upstream)
    let mut peers: HashMap<SocketAddr, Line> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let (len, from) = tokio::select! {
            _ = &mut stopped => return,
            r = front.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(_) => continue,
            },
        };
        if !peers.contains_key(&from) {
            if peers.len() >= MAX_PEERS {
                continue;
            }
            let local: SocketAddr = match upstream {
                SocketAddr::V4(_) => "0.0.0.0:0",
                SocketAddr::V6(_) => "[::]:0",
            }
            .parse()
            .expect("a literal address");
            let Ok(sock) = UdpSocket::bind(local).await else {
                continue;
            };
            let sock = Arc::new(sock);
            let n = peers.len() as u64;
            let seed_of = |k: u64| seed ^ k.wrapping_mul(0x5851_F42D_4C95_7F2D);
            // the way back: upstream's answers to this peer, through a line of their own
            let mut down = Line::new(profile, seed_of(2 * n + 1), front.clone(), from);
            let (back, c) = (sock.clone(), counts.clone());
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65_536];
                while let Ok((len, _)) = back.recv_from(&mut buf).await {
                    down.push(&buf[..len], &c);
                }
            });
            peers.insert(from, Line::new(profile, seed_of(2 * n), sock, upstream));
        }
        if let Some(up) = peers.get_mut(&from) {
            up.push(&buf[..len], &counts);
        }
    }
}
