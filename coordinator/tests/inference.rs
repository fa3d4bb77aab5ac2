//! The mode (b) inference server over real QUIC with mutual TLS on 127.0.0.1: a hospital of the
//! roster gets the plaintext network's label for its encrypted image; a wrong fingerprint,
//! garbage and a stranger's certificate are refused. Every wait is bounded.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use coordinator::inference::{InferenceServer, ServeOptions, ServedModel};
use he_agg::ckks::{CkksContext, wire};
use he_agg::infer::{Architecture, InferencePlan, Network, ParamPolicy};
use protocol::inference::InferRequest;
use protocol::link::{Link, connect};
use protocol::pki::Ca;
use protocol::tls::TlsFiles;
use protocol::{Body, FederationId, Party};

const FED: FederationId = FederationId([3; 16]);
const WAIT: Duration = Duration::from_secs(60);

fn network() -> Network {
    he_agg::infer::testing::tiny_network()
}

fn write_kit(dir: &Path, ca: &Ca, name: &str) -> (TlsFiles, String) {
    std::fs::create_dir_all(dir).unwrap();
    let issued = ca.issue(name).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.cert_pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), &issued.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &issued.key_pem).unwrap();
    (TlsFiles::in_dir(dir), issued.fingerprint)
}

struct Setup {
    _dir: tempfile::TempDir,
    addr: std::net::SocketAddr,
    hospital: TlsFiles,
    stranger: TlsFiles,
}

async fn start_server() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("test consortium").unwrap();
    let (server_tls, _) = write_kit(&dir.path().join("coordinator"), &ca, "coordinator.heal");
    let (hospital, fp) = write_kit(&dir.path().join("h1"), &ca, "hospital-1.heal");
    let other_ca = Ca::new("someone else").unwrap();
    let (stranger, _) = write_kit(&dir.path().join("x"), &other_ca, "hospital-1.heal");
    let roster: HashMap<String, Party> = [(fp, Party::Hospital(1))].into();
    let names = vec!["a".into(), "b".into(), "c".into()];
    let model = ServedModel::new(network(), names, "tiny", 4).unwrap();
    let server = InferenceServer::new(model, FED, roster, server_tls, ServeOptions::default());
    let endpoint = server.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = endpoint.local_addr().unwrap();
    tokio::spawn(server.serve(endpoint));
    Setup {
        _dir: dir,
        addr,
        hospital,
        stranger,
    }
}

async fn next(link: &Link) -> protocol::Incoming {
    tokio::time::timeout(WAIT, link.accept())
        .await
        .expect("the server answers in time")
        .expect("a message")
}

/// Connects as hospital 1, fetches the model information and compiles its plan.
async fn requester(s: &Setup) -> (Link, InferencePlan, [u8; 32]) {
    let link = tokio::time::timeout(WAIT, connect(s.addr, &s.hospital, FED, 1))
        .await
        .unwrap()
        .unwrap();
    link.send(0, Body::InferInfoRequest).await.unwrap();
    let Body::InferInfo(info) = next(&link).await.envelope.body else {
        panic!("model information expected")
    };
    assert_eq!(info.class_names, vec!["a", "b", "c"]);
    let arch: Architecture = serde_json::from_str(&info.architecture).unwrap();
    let plan = InferencePlan::new(&arch.skeleton().unwrap(), &ParamPolicy::default()).unwrap();
    assert_eq!(plan.spec().fingerprint(), info.fingerprint);
    (link, plan, info.fingerprint)
}

fn argmax(v: &[f64]) -> usize {
    (0..v.len()).fold(0, |b, i| if v[i] > v[b] { i } else { b })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_image_gets_the_plaintext_label_over_mtls_quic() {
    let s = start_server().await;
    let (link, plan, fingerprint) = requester(&s).await;
    let spec = plan.spec();
    let ctx = CkksContext::new(spec.parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = spec.generate_keys(&mut kg, &sk);
    let net = network();
    let images: Vec<Vec<u8>> = (0..2)
        .map(|k| (0..36).map(|i| ((i * 29 + k * 71) % 256) as u8).collect())
        .collect();
    let header = InferRequest {
        request_id: 42,
        fingerprint,
        relinearization: keys.relinearization.is_some(),
        galois_keys: spec.galois_steps().len() as u32,
        images: images.len() as u32,
    };
    let mut out = link.open(0, Body::Infer(header)).await.unwrap();
    if let Some(r) = &keys.relinearization {
        out.item(&wire::encode_relinearization_key(&ctx, r))
            .await
            .unwrap();
    }
    for &step in spec.galois_steps() {
        let g = ctx.rlwe().galois_element_for_rotation(step);
        out.item(&wire::encode_galois_key(&ctx, keys.galois.get(g).unwrap()))
            .await
            .unwrap();
    }
    let mut enc = ctx.sk_encryptor(&sk).unwrap();
    for im in &images {
        let pt = spec
            .encode_input(&ctx, &net.normalize_hwc(im).unwrap())
            .unwrap();
        out.item(&wire::encode_seeded_ciphertext(
            &ctx,
            &enc.encrypt_seeded(&pt),
        ))
        .await
        .unwrap();
    }
    out.finish().await.unwrap();
    let mut msg = next(&link).await;
    let Body::InferResult(r) = &msg.envelope.body else {
        panic!("result expected, got {:?}", msg.envelope.body)
    };
    assert_eq!((r.request_id, r.count), (42, 2));
    let dec = ctx.decryptor(&sk).unwrap();
    for im in &images {
        let item = msg
            .next_item()
            .await
            .unwrap()
            .expect("one result per image");
        let ct = wire::decode_ciphertext(&ctx, &item).unwrap();
        let got = spec.decode_output(&ctx, &dec.decrypt(&ct)).unwrap();
        let want: Vec<f64> = net
            .forward(&net.normalize_hwc(im).unwrap())
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_eq!(argmax(&got), argmax(&want), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3);
        }
    }
    assert!(msg.next_item().await.unwrap().is_none());
}

async fn refusal(link: &Link) -> String {
    match next(link).await.envelope.body {
        Body::Refused { reason } => reason,
        other => panic!("a refusal expected, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_fingerprints_garbage_and_strangers_are_refused() {
    let s = start_server().await;
    let (link, plan, fingerprint) = requester(&s).await;
    let spec = plan.spec();
    let header = InferRequest {
        request_id: 1,
        fingerprint,
        relinearization: spec.needs_relinearization(),
        galois_keys: spec.galois_steps().len() as u32,
        images: 1,
    };
    // a wrong fingerprint
    let mut h = header.clone();
    h.fingerprint[5] ^= 0xff;
    link.open(0, Body::Infer(h))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("another plan"), "{reason}");
    // too many images
    let mut h = header.clone();
    h.images = 1000;
    link.open(0, Body::Infer(h))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("1000 images"), "{reason}");
    // garbage as the first item
    let mut out = link.open(0, Body::Infer(header.clone())).await.unwrap();
    out.item(b"\x00\x01garbage").await.unwrap();
    let _ = out.finish().await;
    let reason = refusal(&link).await;
    assert!(
        reason.contains("item 0") && reason.contains("invalid"),
        "{reason}"
    );
    // an unexpected message
    link.send(
        0,
        Body::SetupDone {
            receive_key: vec![],
        },
    )
    .await
    .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("unexpected"), "{reason}");
    // the connection still serves after refusals
    link.send(0, Body::InferInfoRequest).await.unwrap();
    assert!(matches!(
        next(&link).await.envelope.body,
        Body::InferInfo(_)
    ));
    // a certificate of another CA never gets a link
    let stranger = tokio::time::timeout(WAIT, async {
        let l = connect(s.addr, &s.stranger, FED, 1).await?;
        l.send(0, Body::InferInfoRequest).await?;
        l.accept().await.map(|_| ())
    })
    .await
    .expect("bounded");
    assert!(stranger.is_err());
}
