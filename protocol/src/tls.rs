//! TLS 1.3 with mutual authentication against the consortium's CA, for QUIC. The `ring` provider
//! is passed explicitly, so no process-wide provider is needed and none can conflict.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;

use crate::error::ProtocolError;
use crate::identity::COORDINATOR_SERVER_NAME;

/// ALPN of the HEAL federation protocol.
pub const ALPN: &[u8] = b"heal/1";

/// A party's TLS material: the consortium CA and its own certificate and key (PEM files).
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::File {
        path: path.display().to_string(),
        reason: e.to_string(),
    }
}

fn tls_err(e: impl std::fmt::Display) -> ProtocolError {
    ProtocolError::Tls(e.to_string())
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ProtocolError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ProtocolError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, e))
}

fn roots(ca: &Path) -> Result<Arc<RootCertStore>, ProtocolError> {
    let mut store = RootCertStore::empty();
    for c in load_certs(ca)? {
        store.add(c).map_err(|e| file_err(ca, e))?;
    }
    Ok(Arc::new(store))
}

impl TlsFiles {
    /// In a kit directory: `ca.pem`, `cert.pem`, `key.pem`.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }

    /// The DER of this party's own certificate (its identity).
    pub fn own_cert_der(&self) -> Result<Vec<u8>, ProtocolError> {
        Ok(load_certs(&self.cert)?[0].as_ref().to_vec())
    }

    /// The coordinator's side: TLS 1.3 only, client certificates required and chained to the CA.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, ProtocolError> {
        let verifier = WebPkiClientVerifier::builder_with_provider(roots(&self.ca)?, provider())
            .build()
            .map_err(tls_err)?;
        let mut tls = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_client_cert_verifier(verifier)
            .with_single_cert(load_certs(&self.cert)?, load_key(&self.key)?)
            .map_err(tls_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(tls_err)?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
        config.transport_config(transport());
        Ok(config)
    }

    /// The coordinator's endpoint: its QUIC stateless-reset key and the key its connection IDs
    /// are checked with, both derived from its private key so that they are the same after a
    /// restart. A coordinator that crashed and came back then recognises the IDs of its old
    /// connections and answers a hospital's packets on them with a reset the hospital accepts,
    /// and the hospital reconnects at once instead of waiting out the 20 s idle timeout (with
    /// random keys per start, quinn's default, the new process drops those packets as of
    /// unknown IDs, and a reset would not match anyway). Secret as the private key is: whoever
    /// holds them can end the coordinator's connections.
    pub fn endpoint_config(&self) -> Result<quinn::EndpointConfig, ProtocolError> {
        let key = load_key(&self.key)?;
        let reset = blake3::derive_key("HEAL 1 QUIC stateless reset key", key.secret_der());
        let cid = blake3::derive_key("HEAL 1 QUIC connection ID key", key.secret_der());
        let cid_key = u64::from_le_bytes(cid[..8].try_into().expect("8 of 32 bytes"));
        let mut config = quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
            ring::hmac::HMAC_SHA256,
            &reset,
        )));
        config.cid_generator(move || {
            Box::new(quinn_proto::HashedConnectionIdGenerator::from_key(cid_key))
        });
        Ok(config)
    }

    /// A hospital's side: the coordinator must present a certificate of the CA for
    /// `coordinator.heal`; the hospital presents its own.
    pub fn client_config(&self) -> Result<quinn::ClientConfig, ProtocolError> {
        let mut tls = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_err)?
            .with_root_certificates(roots(&self.ca)?)
            .with_client_auth_cert(load_certs(&self.cert)?, load_key(&self.key)?)
            .map_err(tls_err)?;
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).map_err(tls_err)?;
        let mut config = quinn::ClientConfig::new(Arc::new(quic));
        config.transport_config(transport());
        Ok(config)
    }
}

/// The server name a hospital checks (also in the coordinator's certificate).
pub fn coordinator_server_name() -> &'static str {
    COORDINATOR_SERVER_NAME
}

/// What one stream may hold unread. quinn-proto 0.11.19 closes a whole connection ("too many
/// gaps in stream buffer") once a stream's receive buffer holds more than 1,024 separate pieces,
/// and a sender may put a window's worth of packets beyond the first hole: with the 16 MiB HEAL
/// used before (≈ 14,000 packets) a lossy, queueing WAN aborted a mode (b) request in CI. 1 MiB
/// is at most ≈ 900 full packets (1,200-byte datagrams, more bytes per packet once the path MTU
/// grows), so no loss pattern can reach the limit; it still carries 168 Mbit/s per stream at a
/// 50 ms round trip, and the 64 MiB connection window spreads over the streams.
pub const STREAM_WINDOW: u32 = 1 << 20;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_uni_streams(1024u32.into());
    t.keep_alive_interval(Some(std::time::Duration::from_secs(2)));
    t.max_idle_timeout(Some(
        quinn::IdleTimeout::try_from(std::time::Duration::from_secs(20)).expect("20 s fits"),
    ));
    t.stream_receive_window(STREAM_WINDOW.into());
    t.receive_window((64u32 << 20).into());
    t.send_window(64 << 20);
    // BBR paces to the path's measured bandwidth and round trip; loss-based Cubic (quinn's
    // default) takes every random loss for congestion: at 50 ms and 1% loss it held a
    // 20 Mbit/s hospital link to ~2 Mbit/s and a round to 50 s (coordinator/tests/wan.rs)
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// quinn-proto's limit on separate pieces in one stream's receive buffer (`MAX_CHUNKS`).
    const QUINN_MAX_CHUNKS: u32 = 1024;

    /// The fewest stream bytes a full packet of quinn's initial 1,200-byte datagrams carries
    /// (short header, AEAD tag, STREAM frame header and a piggy-backed ACK taken off).
    const MIN_FULL_FRAME: u32 = 1_100;

    #[test]
    fn a_stream_window_of_full_packets_stays_below_quinns_piece_limit() {
        // a sender fills the window with full packets; fewer of them than the limit cannot
        // leave more separate pieces than the limit, however many are lost
        let frames = STREAM_WINDOW.div_ceil(MIN_FULL_FRAME);
        assert!(
            frames < QUINN_MAX_CHUNKS,
            "{STREAM_WINDOW} bytes hold {frames} frames of {MIN_FULL_FRAME} bytes; quinn closes a connection past {QUINN_MAX_CHUNKS}"
        );
        // and it is wide enough for the WAN the design names: 20 Mbit/s at 50 ms is 125 kB
        assert!(STREAM_WINDOW as u64 >= 4 * 20_000_000 / 8 / 20);
    }
}
