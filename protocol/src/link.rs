//! A QUIC connection to one peer that carries framed messages. Every message is the first
//! frame of its own unidirectional stream; a message that announces items is followed on the
//! same stream by the items, one frame each, so a large upload is read and handled item by item
//! and never sits whole in memory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::error::ProtocolError;
use crate::frame::{MAX_FRAME, read_frame, write_frame};
use crate::identity::{FederationId, Party, cert_fingerprint};
use crate::message::{Body, Envelope};
use crate::tls::{TlsFiles, coordinator_server_name};

/// A connection to one authenticated peer.
#[derive(Clone, Debug)]
pub struct Link {
    conn: quinn::Connection,
    federation: FederationId,
    me: Party,
    peer: Party,
    timeout: Duration,
}

/// A message received, with the rest of its stream (its items, if it announced any).
#[derive(Debug)]
pub struct Incoming {
    pub envelope: Envelope,
    recv: quinn::RecvStream,
    timeout: Duration,
}

impl Incoming {
    /// The next item of the stream; `None` once the sender finished it.
    pub async fn next_item(&mut self) -> Result<Option<Vec<u8>>, ProtocolError> {
        tokio::time::timeout(self.timeout, read_frame(&mut self.recv, MAX_FRAME))
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))?
    }
}

/// An outgoing stream of items after a header message. Every write has the link's timeout: a
/// peer that stops reading (its flow-control window full) cannot hold the sender, and through
/// it a round, for longer.
#[derive(Debug)]
pub struct ItemSender {
    send: quinn::SendStream,
    pub bytes: u64,
    timeout: Duration,
}

impl ItemSender {
    pub async fn item(&mut self, bytes: &[u8]) -> Result<(), ProtocolError> {
        tokio::time::timeout(self.timeout, write_frame(&mut self.send, bytes))
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))??;
        self.bytes += 4 + bytes.len() as u64;
        Ok(())
    }

    /// Ends the stream; the peer's `next_item` then returns `None`.
    pub async fn finish(mut self) -> Result<u64, ProtocolError> {
        self.send.finish()?;
        // wait until the peer has everything, so a closing connection does not cut it short
        // (but not for longer than a peer gets for any step)
        tokio::time::timeout(self.timeout, self.send.stopped())
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))?
            .ok();
        Ok(self.bytes)
    }
}

impl Link {
    pub fn peer(&self) -> Party {
        self.peer
    }

    pub fn me(&self) -> Party {
        self.me
    }

    pub fn remote_address(&self) -> SocketAddr {
        self.conn.remote_address()
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sends one message on its own stream. Returns the bytes sent.
    pub async fn send(&self, round: u64, body: Body) -> Result<u64, ProtocolError> {
        self.open(round, body).await?.finish().await
    }

    /// Opens a stream with a header message; items follow through the returned sender.
    pub async fn open(&self, round: u64, body: Body) -> Result<ItemSender, ProtocolError> {
        let env = Envelope::new(self.federation, round, self.me, body);
        let send = tokio::time::timeout(self.timeout, self.conn.open_uni())
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))??;
        let mut sender = ItemSender {
            send,
            bytes: 0,
            timeout: self.timeout,
        };
        sender.item(&env.encode()).await?;
        Ok(sender)
    }

    /// A stream without a header, for tests that forge messages.
    #[doc(hidden)]
    pub async fn open_raw(&self) -> Result<ItemSender, ProtocolError> {
        let send = self.conn.open_uni().await?;
        Ok(ItemSender {
            send,
            bytes: 0,
            timeout: self.timeout,
        })
    }

    /// The next message from the peer (waits as long as the connection lives).
    pub async fn accept(&self) -> Result<Incoming, ProtocolError> {
        let mut recv = self.conn.accept_uni().await?;
        let header = tokio::time::timeout(self.timeout, read_frame(&mut recv, MAX_FRAME))
            .await
            .map_err(|_| ProtocolError::Timeout(self.timeout))??
            .ok_or(ProtocolError::Truncated)?;
        let envelope = Envelope::decode(&header, self.federation, self.peer)?;
        Ok(Incoming {
            envelope,
            recv,
            timeout: self.timeout,
        })
    }

    /// Closes the connection.
    pub fn close(&self, reason: &str) {
        self.conn.close(0u32.into(), reason.as_bytes());
    }

    /// Resolves when the connection is closed, with the reason.
    pub async fn closed(&self) -> String {
        self.conn.closed().await.to_string()
    }
}

/// Default time a peer gets to deliver the rest of a message.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The coordinator's listening endpoint.
pub fn listen(addr: SocketAddr, tls: &TlsFiles) -> Result<quinn::Endpoint, ProtocolError> {
    let conn = |e: std::io::Error| ProtocolError::Connection(e.to_string());
    let socket = std::net::UdpSocket::bind(addr).map_err(conn)?;
    quinn::Endpoint::new(
        tls.endpoint_config()?,
        Some(tls.server_config()?),
        socket,
        Arc::new(quinn::TokioRuntime),
    )
    .map_err(conn)
}

/// Completes an incoming connection and identifies the peer by its certificate, which must be
/// one of `roster` (fingerprint → party).
pub async fn accept_connection(
    incoming: quinn::Incoming,
    federation: FederationId,
    roster: &HashMap<String, Party>,
) -> Result<Link, ProtocolError> {
    let conn = tokio::time::timeout(DEFAULT_TIMEOUT, incoming)
        .await
        .map_err(|_| ProtocolError::Timeout(DEFAULT_TIMEOUT))??;
    let peer = peer_party(&conn, roster)?;
    Ok(Link {
        conn,
        federation,
        me: Party::Coordinator,
        peer,
        timeout: DEFAULT_TIMEOUT,
    })
}

fn peer_party(
    conn: &quinn::Connection,
    roster: &HashMap<String, Party>,
) -> Result<Party, ProtocolError> {
    let certs = conn
        .peer_identity()
        .and_then(|any| {
            any.downcast::<Vec<rustls::pki_types::CertificateDer<'static>>>()
                .ok()
        })
        .ok_or(ProtocolError::UnknownPeer)?;
    let leaf = certs.first().ok_or(ProtocolError::UnknownPeer)?;
    roster
        .get(&cert_fingerprint(leaf.as_ref()))
        .copied()
        .ok_or(ProtocolError::UnknownPeer)
}

/// A hospital's connection to the coordinator at `addr`.
pub async fn connect(
    addr: SocketAddr,
    tls: &TlsFiles,
    federation: FederationId,
    me: u32,
) -> Result<Link, ProtocolError> {
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("literal address");
    let mut endpoint =
        quinn::Endpoint::client(bind).map_err(|e| ProtocolError::Connection(e.to_string()))?;
    endpoint.set_default_client_config(tls.client_config()?);
    let connecting = endpoint
        .connect(addr, coordinator_server_name())
        .map_err(|e| ProtocolError::Connection(e.to_string()))?;
    let conn = tokio::time::timeout(DEFAULT_TIMEOUT, connecting)
        .await
        .map_err(|_| ProtocolError::Timeout(DEFAULT_TIMEOUT))??;
    Ok(Link {
        conn,
        federation,
        me: Party::Hospital(me),
        peer: Party::Coordinator,
        timeout: DEFAULT_TIMEOUT,
    })
}
