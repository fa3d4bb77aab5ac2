//! Every decoder of the protocol's untrusted bytes: envelopes and their bodies (the signed
//! transcripts a coordinator relays among them), head-training jobs, frames, and the signed statements with their
//! certificates and signatures checked against a consortium CA. Each must return a value or an
//! error, never panic, hang or allocate without bound.
//!
//!     cd protocol/fuzz && cargo +nightly fuzz run envelope_decode -- -max_total_time=600
#![no_main]

use protocol::FederationMsg;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use protocol::message::Body;
use protocol::tls::TlsFiles;
use protocol::transcript::{Contribution, PartyKeys, SealedShare, Statement, Verifier};
use protocol::{Envelope, FederationId, Party};

const FED: FederationId = FederationId([5; 16]);

/// A consortium CA and hospital 1's certificate (valid), made once.
fn kit() -> &'static (Verifier, Vec<u8>) {
    static KIT: OnceLock<(Verifier, Vec<u8>)> = OnceLock::new();
    KIT.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("heal-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = protocol::pki::Ca::new("fuzz").expect("ca");
        let issued = ca.issue(&protocol::identity::hospital_dns_name(1)).expect("cert");
        std::fs::write(dir.join("ca.pem"), ca.cert_pem()).expect("ca.pem");
        std::fs::write(dir.join("cert.pem"), &issued.cert_pem).expect("cert.pem");
        std::fs::write(dir.join("key.pem"), &issued.key_pem).expect("key.pem");
        let files = TlsFiles::in_dir(&dir);
        let verifier = Verifier::from_files(&files).expect("verifier");
        (verifier, files.own_cert_der().expect("der"))
    })
}

fuzz_target!(|data: &[u8]| {
    let (verifier, cert) = kit();
    for peer in [Party::Coordinator, Party::Hospital(1)] {
        if let Ok(env) = Envelope::decode(data, FED, peer) {
            // what a hospital does with relayed transcripts: check every signature
            match &env.body {
                Body::Federation(FederationMsg::SetupKeys { parties }) => {
                    for p in parties {
                        let _ = verifier.verify(&p.certificate, p.hospital, &p.statement(FED), &p.signature);
                    }
                }
                Body::Federation(FederationMsg::SwitchRequest { contributions, .. }) => {
                    for c in contributions {
                        let _ = verifier.verify(cert, c.hospital, &c.statement(FED, env.round), &c.signature);
                    }
                }
                Body::Federation(FederationMsg::RelayedShares { sealed }) | Body::Federation(FederationMsg::ShamirShares { sealed }) => {
                    for s in sealed {
                        let st = Statement::Dealt { federation: FED, from: s.peer, to: 1, sealed: protocol::transcript::digest(&s.sealed) };
                        let _ = verifier.verify(cert, s.peer, &st, &s.signature);
                    }
                }
                _ => {}
            }
            // a decoded envelope re-encodes to what decodes to the same
            let again = Envelope::decode(&env.encode(), FED, peer).expect("re-decodes");
            assert_eq!(again, env);
        }
    }
    // arbitrary bytes as a certificate and a signature
    let (a, b) = data.split_at(data.len() / 2);
    let st = Statement::ReceiveKey { federation: FED, hospital: 1, receive_key: [0; 32] };
    let _ = verifier.verify(a, 1, &st, b);
    let _ = verifier.check_certificate(a, 1);
    let _ = postcard::from_bytes::<PartyKeys>(data);
    let _ = postcard::from_bytes::<SealedShare>(data);
    let _ = postcard::from_bytes::<Contribution>(data);
    // a head-training job as a keyholder's round-1 header or a coordinator's answer carries it
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = protocol::serve::head::HeadJob::parse(text);
    }
});
