//! The mode (b) inference server over real QUIC with mutual TLS on 127.0.0.1: a hospital of the
//! roster sends its evaluation keys once, then gets the plaintext network's labels for its
//! encrypted images request after request without sending keys again (also on a new
//! connection); unknown keys, a wrong fingerprint, garbage and a stranger's certificate are
//! refused. Every wait is bounded.

use protocol::{FederationMsg, ReleasedMsg};
use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use coordinator::serve::released::{InferenceServer, ServeOptions, ServedModel};
use he_agg::ckks::{CkksContext, SecretKey, wire};
use he_agg::infer::{
    Architecture, EvaluationKeys, InferencePlan, InferenceSpec, Network, ParamPolicy,
};
use protocol::link::{Link, connect};
use protocol::pki::Ca;
use protocol::serve::released::{InferKeys, InferRequest, KEYS_UNKNOWN, KeysId, keys_id};
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
    let Body::Released(ReleasedMsg::InferInfo(info)) = next(&link).await.envelope.body else {
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

/// A requester's key items in protocol order, and their header.
fn key_stream(
    ctx: &CkksContext,
    spec: &InferenceSpec,
    keys: &EvaluationKeys,
) -> (InferKeys, Vec<Vec<u8>>) {
    let mut items = Vec::new();
    if let Some(r) = &keys.relinearization {
        items.push(wire::encode_relinearization_key(ctx, r));
    }
    for &step in spec.galois_steps() {
        let g = ctx.rlwe().galois_element_for_rotation(step);
        items.push(wire::encode_galois_key(ctx, keys.galois.get(g).unwrap()));
    }
    let header = InferKeys {
        keys: keys_id(items.iter().map(Vec::as_slice)),
        fingerprint: spec.fingerprint(),
        relinearization: keys.relinearization.is_some(),
        galois_keys: spec.galois_steps().len() as u32,
    };
    (header, items)
}

/// Sends the keys and waits for the server to keep them; the bytes sent.
async fn send_keys(link: &Link, header: &InferKeys, items: &[Vec<u8>]) -> u64 {
    let mut out = link
        .open(0, Body::Released(ReleasedMsg::InferKeys(header.clone())))
        .await
        .unwrap();
    for k in items {
        out.item(k).await.unwrap();
    }
    let bytes = out.finish().await.unwrap();
    match next(link).await.envelope.body {
        Body::Released(ReleasedMsg::InferKeysStored { keys }) => assert_eq!(keys, header.keys),
        other => panic!("keys stored expected, got {other:?}"),
    }
    bytes
}

/// One request of `images` under `keys`; the bytes sent and the logits.
#[allow(clippy::too_many_arguments)]
async fn ask(
    link: &Link,
    ctx: &CkksContext,
    spec: &InferenceSpec,
    sk: &SecretKey,
    keys: KeysId,
    request_id: u64,
    images: &[Vec<u8>],
) -> (u64, Vec<Vec<f64>>) {
    let net = network();
    let header = InferRequest {
        request_id,
        fingerprint: spec.fingerprint(),
        keys,
        images: images.len() as u32,
        ciphertexts_per_image: spec.input_ciphertexts() as u32,
    };
    let mut out = link
        .open(0, Body::Released(ReleasedMsg::Infer(header)))
        .await
        .unwrap();
    let mut enc = ctx.sk_encryptor(sk).unwrap();
    for im in images {
        for pt in spec
            .encode_input(ctx, &net.normalize_hwc(im).unwrap())
            .unwrap()
        {
            out.item(&wire::encode_seeded_ciphertext(
                ctx,
                &enc.encrypt_seeded(&pt),
            ))
            .await
            .unwrap();
        }
    }
    let bytes = out.finish().await.unwrap();
    let mut msg = next(link).await;
    let Body::Released(ReleasedMsg::InferResult(r)) = &msg.envelope.body else {
        panic!("result expected, got {:?}", msg.envelope.body)
    };
    assert_eq!((r.request_id, r.count as usize), (request_id, images.len()));
    let dec = ctx.decryptor(sk).unwrap();
    let mut logits = Vec::new();
    while let Some(item) = msg.next_item().await.unwrap() {
        let ct = wire::decode_ciphertext(ctx, &item).unwrap();
        logits.push(spec.decode_output(ctx, &dec.decrypt(&ct)).unwrap());
    }
    assert_eq!(logits.len(), images.len());
    (bytes, logits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_travel_once_and_encrypted_images_get_the_plaintext_labels() {
    let s = start_server().await;
    let (link, plan, _) = requester(&s).await;
    let spec = plan.spec();
    let ctx = CkksContext::new(spec.parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let keys = spec.generate_keys(&mut kg, &sk);
    let net = network();
    let images: Vec<Vec<u8>> = (0..3)
        .map(|k| (0..36).map(|i| ((i * 29 + k * 71) % 256) as u8).collect())
        .collect();
    let (header, items) = key_stream(&ctx, spec, &keys);
    // a request before the keys is refused, naming the reason
    let request = InferRequest {
        request_id: 1,
        fingerprint: spec.fingerprint(),
        keys: header.keys,
        images: 1,
        ciphertexts_per_image: spec.input_ciphertexts() as u32,
    };
    link.open(0, Body::Released(ReleasedMsg::Infer(request)))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.starts_with(KEYS_UNKNOWN), "{reason}");
    // keys once, then two requests: the second carries images only
    let key_bytes = send_keys(&link, &header, &items).await;
    let (first, a) = ask(&link, &ctx, spec, &sk, header.keys, 42, &images[..2]).await;
    let (second, b) = ask(&link, &ctx, spec, &sk, header.keys, 43, &images[2..]).await;
    assert!(
        first < key_bytes && second < key_bytes / 2,
        "{first} {second} {key_bytes}"
    );
    for (im, got) in images.iter().zip(a.iter().chain(&b)) {
        let want: Vec<f64> = net
            .forward(&net.normalize_hwc(im).unwrap())
            .unwrap()
            .iter()
            .map(|&v| v as f64)
            .collect();
        assert_eq!(argmax(got), argmax(&want), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() < 1e-3);
        }
    }
    // the server keeps the keys for this hospital across connections
    link.close("done");
    let (again, _, _) = requester(&s).await;
    let (_, c) = ask(&again, &ctx, spec, &sk, header.keys, 44, &images[..1]).await;
    assert_eq!(argmax(&c[0]), argmax(&a[0]));
    // keys that do not hash to the announced id are refused
    let mut lying = header.clone();
    lying.keys[0] ^= 1;
    let mut out = again
        .open(0, Body::Released(ReleasedMsg::InferKeys(lying)))
        .await
        .unwrap();
    for k in &items {
        out.item(k).await.unwrap();
    }
    out.finish().await.unwrap();
    let reason = refusal(&again).await;
    assert!(reason.contains("hash to"), "{reason}");
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
    let ctx = CkksContext::new(spec.parameters().clone()).unwrap();
    let mut kg = ctx.key_generator().unwrap();
    let sk = kg.secret_key();
    let (keys, items) = key_stream(&ctx, spec, &spec.generate_keys(&mut kg, &sk));
    send_keys(&link, &keys, &items).await;
    let header = InferRequest {
        request_id: 1,
        fingerprint,
        keys: keys.keys,
        images: 1,
        ciphertexts_per_image: spec.input_ciphertexts() as u32,
    };
    // a wrong fingerprint
    let mut h = header.clone();
    h.fingerprint[5] ^= 0xff;
    link.open(0, Body::Released(ReleasedMsg::Infer(h)))
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
    link.open(0, Body::Released(ReleasedMsg::Infer(h)))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("1000 images"), "{reason}");
    // a wrong number of ciphertexts per image
    let mut h = header.clone();
    h.ciphertexts_per_image += 1;
    link.open(0, Body::Released(ReleasedMsg::Infer(h)))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("ciphertexts per image"), "{reason}");
    // a key stream whose Galois key count is not the plan's
    let mut k = keys.clone();
    k.galois_keys += 1;
    link.open(0, Body::Released(ReleasedMsg::InferKeys(k)))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("Galois keys announced"), "{reason}");
    // garbage as the first item
    let mut out = link
        .open(0, Body::Released(ReleasedMsg::Infer(header.clone())))
        .await
        .unwrap();
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
        Body::Federation(FederationMsg::SetupDone {
            receive_key: vec![],
            signature: vec![],
        }),
    )
    .await
    .unwrap();
    let reason = refusal(&link).await;
    assert!(reason.contains("unexpected"), "{reason}");
    // a request that trickles (header, no items) holds this hospital's one slot: a second
    // request of the same hospital, on another connection, is refused at once instead of
    // queueing behind it
    let trickle = link
        .open(0, Body::Released(ReleasedMsg::Infer(header.clone())))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (second, _, _) = requester(&s).await;
    second
        .open(0, Body::Released(ReleasedMsg::Infer(header.clone())))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let reason = refusal(&second).await;
    assert!(reason.contains("one at a time"), "{reason}");
    // and the trickle itself is cut off after its budget (10 s for its one item)
    let reason = refusal(&link).await;
    assert!(reason.contains("did not arrive within 10 s"), "{reason}");
    drop(trickle);
    // the connection still serves after refusals
    link.send(0, Body::InferInfoRequest).await.unwrap();
    assert!(matches!(
        next(&link).await.envelope.body,
        Body::Released(ReleasedMsg::InferInfo(_))
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
