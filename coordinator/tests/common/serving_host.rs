//! Playing the mode (a) serving coordinator against the real `client hold-keys`: the helpers
//! the compromised-host tests share (start a keyholder, accept it, send and read streams, set
//! the served keys up as an honest server would).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coordinator::serve::collective::keys::ServedKeys;
use he_agg::ckks::CkksContext;
use he_agg::ring::Poly;
use protocol::link::{Incoming, Link, accept_connection};
use protocol::{Body, CollectiveMsg, Party};

use super::{Fed, client_bin};

pub const WAIT: Duration = Duration::from_secs(300);

pub fn log(root: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(root.join(name)).unwrap()
}

pub fn keyholder(fed: &Fed, i: usize, addr: &str) -> Child {
    keyholder_in(
        Command::new(client_bin()),
        fed,
        i,
        addr,
        &format!("keyholder-{i}.log"),
    )
}

/// `client hold-keys` of hospital `i` of `fed` dialling `addr`, started by `command` (the
/// client binary, or a wrapper that runs it: `netns::Hosts::command`), its log in
/// ROOT/`log_name`.
pub fn keyholder_in(command: Command, fed: &Fed, i: usize, addr: &str, log_name: &str) -> Child {
    spawn_keyholder(command, fed, i, addr, log_name, &[])
}

/// `client hold-keys --head` of hospital `i` of `fed` dialling `addr` (a head-training key).
pub fn head_keyholder(fed: &Fed, i: usize, addr: &str) -> Child {
    let log_name = format!("keyholder-{i}.log");
    spawn_keyholder(
        Command::new(client_bin()),
        fed,
        i,
        addr,
        &log_name,
        &["--head"],
    )
}

fn spawn_keyholder(
    mut command: Command,
    fed: &Fed,
    i: usize,
    addr: &str,
    log_name: &str,
    extra: &[&str],
) -> Child {
    command
        .arg("hold-keys")
        .args(extra)
        .args(["--patience-s", "300", "--server", addr, "--site"])
        .arg(fed.hospital_dirs[i - 1].join("site.toml"))
        .arg("--out")
        .arg(fed.root.join(format!("node-{i}")))
        .stdout(Stdio::null())
        .stderr(log(&fed.root, log_name))
        .spawn()
        .unwrap()
}

pub async fn next(link: &Link) -> Incoming {
    tokio::time::timeout(WAIT, link.accept())
        .await
        .expect("a message in time")
        .expect("a message")
}

pub async fn items(msg: &mut Incoming) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(item) = msg.next_item().await.unwrap() {
        out.push(item);
    }
    out
}

/// The mode (a) test federation (`collective_config`) trained on a port of its own, for the
/// tests that then start `serve-inference --collective` themselves.
pub fn trained_collective() -> Fed {
    trained_collective_of(&super::collective_config())
}

/// [`trained_collective`] of another config made from [`super::collective_config`].
pub fn trained_collective_of(config: &str) -> Fed {
    let port = super::free_port();
    super::trained(&config.replace(
        "round_timeout_s = 300",
        &format!(
            "round_timeout_s = 300\ncoordinator_address = \"127.0.0.1:{port}\"\n\
             listen = \"127.0.0.1:{port}\""
        ),
    ))
}

/// `coordinator serve-inference --collective` for `fed` at `addr`, its log in `log`, its state
/// in `state_dir` when given (else in the kit).
pub fn serve_collective(fed: &Fed, addr: &str, log: &Path, state_dir: Option<&Path>) -> Child {
    let mut c = Command::new(super::coordinator_bin());
    c.args(["serve-inference", "--collective", "--listen", addr, "--dir"])
        .arg(&fed.coordinator_dir);
    if let Some(state) = state_dir {
        c.arg("--state-dir").arg(state);
    }
    c.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap()
}

/// Hospital 1's `client infer` of `images` at the server at `addr` (report in `json`).
pub fn infer_at(fed: &Fed, addr: &str, images: &[&str], json: &Path) -> std::process::Output {
    Command::new(client_bin())
        .args([
            "--quiet",
            "infer",
            "--timeout-s",
            "120",
            "--server",
            addr,
            "--site",
        ])
        .arg(fed.hospital_dirs[0].join("site.toml"))
        .arg("--json")
        .arg(json)
        .args(images)
        .env("HEAL_DATA_DIR", super::data_dir())
        .output()
        .unwrap()
}

/// The labels of a `client infer` that must have succeeded (its stderr in the panic).
pub fn labels_of(out: &std::process::Output, json: &Path) -> Vec<u64> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    super::infer_labels(&serde_json::from_slice(&std::fs::read(json).unwrap()).unwrap())
}

/// The plaintext network's labels of `images` (hospital 1's final network, `client infer
/// --local`).
pub fn plaintext_labels(fed: &Fed, images: &[&str]) -> Vec<u64> {
    let json = fed.root.join("local.json");
    let out = Command::new(client_bin())
        .args(["--quiet", "infer", "--local", "--network"])
        .arg(fed.root.join("node-1/network.json"))
        .arg("--json")
        .arg(&json)
        .args(images)
        .env("HEAL_DATA_DIR", super::data_dir())
        .output()
        .unwrap();
    labels_of(&out, &json)
}

/// A polynomial over `basis` whose every NTT word is `k` mod its prime (the constant k).
pub fn constant(ctx: &CkksContext, basis: &[usize], k: u128) -> Poly {
    let ring = ctx.rlwe().ring();
    let mut data = Vec::with_capacity(ctx.n() * basis.len());
    for &idx in basis {
        let q = ring.modulus(idx).value();
        data.extend(std::iter::repeat_n((k % u128::from(q)) as u64, ctx.n()));
    }
    Poly::from_data(ctx.n(), data)
}

/// The next message on `link` within `wait`, if any.
pub async fn answer(link: &Link, wait: Duration) -> Option<Incoming> {
    match tokio::time::timeout(wait, link.accept()).await {
        Ok(Ok(m)) => Some(m),
        _ => None,
    }
}

/// Accepts a keyholder's (re)connection and its hello.
pub async fn accept_keyholder(
    endpoint: &protocol::quinn::Endpoint,
    fed: &Fed,
    roster: &HashMap<String, Party>,
) -> (u32, Link) {
    let incoming = tokio::time::timeout(WAIT, endpoint.accept())
        .await
        .expect("a keyholder connects")
        .unwrap();
    let link = accept_connection(incoming, fed.federation, roster)
        .await
        .unwrap();
    let Party::Hospital(h) = link.peer() else {
        panic!("not a hospital")
    };
    assert!(matches!(
        next(&link).await.envelope.body,
        Body::Collective(CollectiveMsg::KeyholderHello { .. })
    ));
    (h, link)
}

pub async fn send(link: &Link, body: Body, items: &[Vec<u8>]) {
    let mut out = link.open(0, body).await.unwrap();
    for it in items {
        out.item(it).await.unwrap();
    }
    out.finish().await.unwrap();
}

/// [`send`] for a message the peer should refuse: it may stop reading the stream before the last
/// item (QUIC's STOP_SENDING), which is a refusal too, not a failure of the test; whatever the
/// peer does then is for the caller to check.
pub async fn send_refusable(link: &Link, body: Body, items: &[Vec<u8>]) {
    let refused = |r: Result<(), protocol::ProtocolError>| match r {
        Ok(()) => false,
        Err(protocol::ProtocolError::Connection(m)) if m.contains("stopped by peer") => true,
        Err(e) => panic!("sending a message to be refused: {e}"),
    };
    let mut out = link.open(0, body).await.unwrap();
    for it in items {
        if refused(out.item(it).await) {
            return;
        }
    }
    refused(out.finish().await.map(|_| ()));
}

pub fn log_of(fed: &Fed, i: usize) -> String {
    std::fs::read_to_string(fed.root.join(format!("keyholder-{i}.log"))).unwrap()
}

/// Every one of `count` keyholders connected (each once, by hospital).
pub async fn accept_all(
    endpoint: &protocol::quinn::Endpoint,
    fed: &Fed,
    roster: &HashMap<String, Party>,
    count: usize,
) -> BTreeMap<u32, Link> {
    let mut links = BTreeMap::new();
    while links.len() < count {
        let (h, link) = accept_keyholder(endpoint, fed, roster).await;
        links.insert(h, link);
    }
    links
}

/// The final network of the trained federation, as hospital 1's keyholder serves it.
pub fn final_network(fed: &Fed) -> he_agg::infer::Network {
    let path = fed.root.join("node-1/network.json");
    he_agg::infer::NetworkFile::from_json(&std::fs::read_to_string(&path).unwrap(), &path)
        .unwrap()
        .network
}

/// Setup as an honest serving coordinator runs it with every keyholder of `links` (t of N
/// `threshold`): round 1 collected and relayed, round 2 collected, the keys' sums sent; returns
/// once every keyholder is ready.
pub async fn honest_setup(links: &BTreeMap<u32, Link>, keys: &mut ServedKeys, threshold: u32) {
    collect_round1(links, keys, threshold).await;
    for (&h, link) in links {
        let (body, its) = keys.round1_result(h).unwrap();
        send(link, body, &its).await;
    }
    finish_setup(links, keys).await;
}

/// Setup started (t of N `threshold`) and every keyholder's round-1 shares stored, as an
/// honest server collects them.
pub async fn collect_round1(links: &BTreeMap<u32, Link>, keys: &mut ServedKeys, threshold: u32) {
    let hospitals = links.len() as u32;
    for link in links.values() {
        link.send(
            0,
            Body::Collective(CollectiveMsg::CollectiveStart {
                hospitals,
                threshold,
            }),
        )
        .await
        .unwrap();
    }
    for (&h, link) in links {
        let mut msg = next(link).await;
        let Body::Collective(CollectiveMsg::CollectiveRound1(header)) = msg.envelope.body.clone()
        else {
            panic!("round-1 shares expected")
        };
        let mut stream = keys.begin_round1(h, header).unwrap();
        let ctx = keys.compiled().unwrap().ctx.clone();
        for item in items(&mut msg).await {
            stream.push(&ctx, &item).unwrap();
        }
        keys.store_round1(stream).unwrap();
    }
}

/// After the round-1 relay: every keyholder's round-2 share collected, the keys made and sent,
/// every keyholder ready.
pub async fn finish_setup(links: &BTreeMap<u32, Link>, keys: &mut ServedKeys) {
    for link in links.values() {
        let mut formed = false;
        let mut share2 = None;
        while !(formed && share2.is_some()) {
            let mut msg = next(link).await;
            match msg.envelope.body.clone() {
                Body::Collective(CollectiveMsg::CollectiveRound2) => {
                    share2 = Some(items(&mut msg).await.remove(0))
                }
                Body::Collective(CollectiveMsg::ThresholdFormed) => formed = true,
                other => panic!("unexpected {}", other.kind()),
            }
        }
        keys.store_round2(&share2.unwrap()).unwrap();
    }
    keys.make_keys().unwrap();
    let (body, its) = keys.keyholder_keys().unwrap();
    for link in links.values() {
        send(link, body.clone(), &its).await;
    }
    for link in links.values() {
        assert!(matches!(
            next(link).await.envelope.body,
            Body::Collective(CollectiveMsg::KeyholderReady)
        ));
    }
}

/// A genuine mode (a) request of hospital 1: its public key and one image encrypted under the
/// collective key, signed with its kit.
pub struct Genuine {
    pub signed: protocol::serve::collective::CollectiveRequest,
    /// the requester's public key, then the image's ciphertexts
    pub items: Vec<Vec<u8>>,
    pub requester_sk: he_agg::ckks::SecretKey,
    pub x: Vec<f32>,
}

pub fn genuine_request(
    fed: &Fed,
    ctx: &std::sync::Arc<CkksContext>,
    spec: &he_agg::infer::InferenceSpec,
    collective: &he_agg::ckks::PublicKey,
    input_len: usize,
    request_id: u64,
) -> Genuine {
    use he_agg::ckks::wire;
    let mut rkg = ctx.key_generator().unwrap();
    let requester_sk = rkg.secret_key();
    let mut items = vec![wire::encode_public_key(ctx, &rkg.public_key(&requester_sk))];
    let x: Vec<f32> = (0..input_len)
        .map(|i| ((i * 37) % 101) as f32 / 101.0)
        .collect();
    let mut enc = ctx.pk_encryptor(collective).unwrap();
    items.extend(
        spec.encode_input(ctx, &x)
            .unwrap()
            .iter()
            .map(|pt| wire::encode_ciphertext(ctx, &enc.encrypt(pt))),
    );
    let hospital_1 = protocol::transcript::Signer::from_files(&protocol::tls::TlsFiles::in_dir(
        &fed.hospital_dirs[0],
    ))
    .unwrap();
    let mut signed = protocol::serve::collective::CollectiveRequest {
        request_id,
        fingerprint: spec.fingerprint(),
        images: 1,
        ciphertexts_per_image: items.len() as u32 - 1,
        signature: vec![],
    };
    signed.signature =
        hospital_1.sign(&signed.statement(fed.federation, 1, items.iter().map(Vec::as_slice)));
    Genuine {
        signed,
        items,
        requester_sk,
        x,
    }
}

/// The result switched with the summed shares; asserts the requester reads `net`'s logits.
pub fn switched_to_requester(
    ctx: &CkksContext,
    spec: &he_agg::infer::InferenceSpec,
    net: &he_agg::infer::Network,
    genuine: &Genuine,
    pcks: &he_agg::multiparty::PublicKeySwitch,
    result: &[u8],
    sum: he_agg::multiparty::PublicKeySwitchShare,
) -> he_agg::ckks::Ciphertext {
    let result = he_agg::ckks::wire::decode_ciphertext(ctx, result).unwrap();
    let switched = pcks.finalize(&result, sum).unwrap();
    let logits = spec
        .decode_output(
            ctx,
            &ctx.decryptor(&genuine.requester_sk)
                .unwrap()
                .decrypt(&switched),
        )
        .unwrap();
    let want = net.forward(&genuine.x).unwrap();
    let err = logits
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - f64::from(*b)).abs())
        .fold(0.0, f64::max);
    assert!(err < 0.05, "logits {logits:?} against {want:?}");
    switched
}
