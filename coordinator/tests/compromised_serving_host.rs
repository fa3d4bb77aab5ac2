//! A compromised serving host (issue 46, item 1): this test plays the mode (a) serving
//! coordinator with the coordinator's real kit against the real `client hold-keys` of a trained
//! 3-hospital federation (t = 2) on 127.0.0.1, and tries to read the collective inference
//! secret two ways:
//! - in setup, it hands every keyholder a round-1 relinearization "sum" of its own (a constant
//!   K): a keyholder that makes its round-2 share on it returns s_i·K + e, its secret share;
//! - serving, it asks t keyholders to switch a "result" c = (0, K) to a key of its own: the
//!   switched result decrypts to K·s + flooding, the collective secret.
//!
//! Every wait is bounded; the children die with the test.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use coordinator::provision::Roster;
use coordinator::serve::collective::keys::{KeyPlan, ServedKeys, setup_id};
use he_agg::ckks::{Ciphertext, CkksContext, SecretKey, wire};
use he_agg::infer::threshold::served_combiner;
use he_agg::multiparty::{RelinKeyShare1, wire as mpw};
use he_agg::ring::Poly;
use protocol::link::{Incoming, Link, accept_connection, listen};
use protocol::serve::collective::ResultSwitchRequest;
use protocol::tls::TlsFiles;
use protocol::{Body, Party};

mod common;
use common::{Fed, Procs, client_bin, free_port, trained};

const WAIT: Duration = Duration::from_secs(300);

/// 3 hospitals, t = 2, one round of the shallow network `serving.rs` serves (N = 2^14).
fn config(port: u16) -> String {
    let head = format!(
        "[federation]\nname = \"compromised\"\nhospitals = 3\nthreshold = 2\nrounds = 1\n\
         min_hospitals = 3\ninference = \"collective\"\nround_timeout_s = 300\n\
         coordinator_address = \"127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let model = "[model]\n[[model.layers]]\ntype = \"conv\"\nchannels = 4\nkernel = 5\nstride = 2\n\
                 [[model.layers]]\ntype = \"act\"\n[[model.layers]]\ntype = \"dense\"\n";
    format!("{head}{}\n{model}", common::breastmnist_sections(1))
}

fn log(root: &Path, name: &str) -> std::fs::File {
    std::fs::File::create(root.join(name)).unwrap()
}

fn keyholder(fed: &Fed, i: usize, addr: &str) -> Child {
    Command::new(client_bin())
        .args([
            "hold-keys",
            "--patience-s",
            "300",
            "--server",
            addr,
            "--site",
        ])
        .arg(fed.hospital_dirs[i - 1].join("site.toml"))
        .arg("--out")
        .arg(fed.root.join(format!("node-{i}")))
        .stdout(Stdio::null())
        .stderr(log(&fed.root, &format!("keyholder-{i}.log")))
        .spawn()
        .unwrap()
}

async fn next(link: &Link) -> Incoming {
    tokio::time::timeout(WAIT, link.accept())
        .await
        .expect("a message in time")
        .expect("a message")
}

async fn items(msg: &mut Incoming) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(item) = msg.next_item().await.unwrap() {
        out.push(item);
    }
    out
}

/// A polynomial over `basis` whose every NTT word is `k` mod its prime (the constant k).
fn constant(ctx: &CkksContext, basis: &[usize], k: u128) -> Poly {
    let ring = ctx.rlwe().ring();
    let mut data = Vec::with_capacity(ctx.n() * basis.len());
    for &idx in basis {
        let q = ring.modulus(idx).value();
        data.extend(std::iter::repeat_n((k % u128::from(q)) as u64, ctx.n()));
    }
    Poly::from_data(ctx.n(), data)
}

/// The coefficients of limb 0 of an NTT-form polynomial over the key basis, centred.
fn limb0(ctx: &CkksContext, p: &Poly) -> Vec<i64> {
    let ring = ctx.rlwe().ring();
    let idx = ctx.rlwe().key_basis()[0];
    let q = ring.modulus(idx).value();
    let mut limb = p.limb(0).to_vec();
    ring.intt_limb(&mut limb, idx);
    limb.iter()
        .map(|&x| {
            if x > q / 2 {
                x as i64 - q as i64
            } else {
                x as i64
            }
        })
        .collect()
}

/// A keyholder's inference secret as it keeps it on disk (only this test reads it: to check
/// what the attack recovered).
fn secret_on_disk(ctx: &CkksContext, fed: &Fed, i: usize) -> SecretKey {
    let path = fed.root.join(format!("node-{i}/state/inference/share.key"));
    wire::decode_secret_key(ctx, &std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn a_compromised_serving_host_reads_the_collective_inference_key() {
    let fed = trained(&config(free_port()));
    let roster = Roster::read(&fed.coordinator_dir.join("roster.toml"))
        .unwrap()
        .parties();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let endpoint = listen(
        addr.parse().unwrap(),
        &TlsFiles::in_dir(&fed.coordinator_dir),
    )
    .unwrap();
    let _keyholders = Procs((1..=3).map(|i| keyholder(&fed, i, &addr)).collect());

    let (recovered_shares, truth_shares, recovered_s, truth_s) = rt.block_on(async {
        let mut links: BTreeMap<u32, Link> = BTreeMap::new();
        while links.len() < 3 {
            let incoming = tokio::time::timeout(WAIT, endpoint.accept())
                .await
                .expect("keyholders connect")
                .unwrap();
            let link = accept_connection(incoming, fed.federation, &roster)
                .await
                .unwrap();
            let Party::Hospital(h) = link.peer() else {
                panic!("not a hospital")
            };
            assert!(matches!(
                next(&link).await.envelope.body,
                Body::KeyholderHello { .. }
            ));
            links.insert(h, link);
        }
        // round 1, collected as an honest server would
        let mut keys = ServedKeys::new(fed.federation, 3, 4);
        for link in links.values() {
            link.send(
                0,
                Body::CollectiveStart {
                    hospitals: 3,
                    threshold: 2,
                },
            )
            .await
            .unwrap();
        }
        for (&h, link) in &links {
            let mut msg = next(link).await;
            let Body::CollectiveRound1(header) = msg.envelope.body.clone() else {
                panic!("round-1 shares expected")
            };
            let mut stream = keys.begin_round1(h, header).unwrap();
            let ctx = keys.compiled().unwrap().ctx.clone();
            for item in items(&mut msg).await {
                stream.push(&ctx, &item).unwrap();
            }
            keys.store_round1(stream).unwrap();
        }
        let compiled = keys.compiled().unwrap();
        let ctx = compiled.ctx.clone();
        let KeyPlan::Served { plan, .. } = &compiled.plan else {
            panic!("a served plan")
        };
        let spec = plan.spec().clone();
        let basis = ctx.rlwe().key_basis().to_vec();

        // 1. the crafted round-1 relinearization sum: h0 = K, h1 = 0
        const K: u128 = 1 << 20;
        let (_, honest) = keys.round1_result(1).unwrap();
        let digits = mpw::decode_relin_share1(&ctx, &honest[0])
            .unwrap()
            .parts()
            .0
            .len();
        let crafted = RelinKeyShare1::from_parts(
            (0..digits).map(|_| constant(&ctx, &basis, K)).collect(),
            (0..digits).map(|_| constant(&ctx, &basis, 0)).collect(),
        );
        let crafted = mpw::encode_relin_share1(&ctx, &crafted);
        for (&h, link) in &links {
            let (body, mut its) = keys.round1_result(h).unwrap();
            its[0] = crafted.clone();
            let mut out = link.open(0, body).await.unwrap();
            for it in &its {
                out.item(it).await.unwrap();
            }
            out.finish().await.unwrap();
        }
        let mut recovered_shares = Vec::new();
        let mut truth_shares = Vec::new();
        for (&h, link) in &links {
            let mut formed = false;
            let mut share2 = None;
            while !(formed && share2.is_some()) {
                let mut msg = next(link).await;
                match msg.envelope.body.clone() {
                    Body::CollectiveRound2 => share2 = Some(items(&mut msg).await.remove(0)),
                    Body::ThresholdFormed => formed = true,
                    other => panic!("unexpected {}", other.kind()),
                }
            }
            let share2 = mpw::decode_relin_share2(&ctx, &share2.unwrap()).unwrap();
            let words = limb0(&ctx, &share2.parts().0[0]);
            recovered_shares.push(
                words
                    .iter()
                    .map(|&w| (w as f64 / K as f64).round() as i64)
                    .collect::<Vec<i64>>(),
            );
            truth_shares.push(limb0(&ctx, secret_on_disk(&ctx, &fed, h as usize).poly()));
        }

        // 2. serving: c = (0, K) at the results' level, switched to the server's own key
        let level = spec.output_level();
        let q_basis = ctx.rlwe().q_basis(level).to_vec();
        let q_bits: u32 = q_basis
            .iter()
            .map(|&i| ctx.rlwe().ring().modulus(i).bits())
            .sum();
        let k_exp = q_bits - 6;
        let mut parts = vec![constant(&ctx, &q_basis, 0), constant(&ctx, &q_basis, 0)];
        // K = 2^k_exp in every limb
        for (pos, &idx) in q_basis.iter().enumerate() {
            let q = u128::from(ctx.rlwe().ring().modulus(idx).value());
            let mut v = 1u128;
            for _ in 0..k_exp {
                v = (v * 2) % q;
            }
            parts[1].limb_mut(pos).fill(v as u64);
        }
        let ct = Ciphertext {
            parts,
            scale: spec.input_scale(),
        };
        let mut kg = ctx.key_generator().unwrap();
        let own_sk = kg.secret_key();
        let own_pk = wire::encode_public_key(&ctx, &kg.public_key(&own_sk));
        let setup = setup_id(&crafted);
        let active = vec![1u32, 2];
        for h in &active {
            let mut out = links[h]
                .open(
                    0,
                    Body::ResultSwitch(ResultSwitchRequest {
                        setup,
                        request: 1,
                        attempt: 0,
                        requester: 1,
                        active: active.clone(),
                        count: 1,
                    }),
                )
                .await
                .unwrap();
            out.item(&own_pk).await.unwrap();
            out.item(&wire::encode_ciphertext(&ctx, &ct)).await.unwrap();
            out.finish().await.unwrap();
        }
        let pcks = served_combiner(&ctx, 3, 2).unwrap();
        let mut sum = None;
        for h in &active {
            let mut msg = next(&links[h]).await;
            assert!(
                matches!(msg.envelope.body, Body::ResultShares(_)),
                "keyholder {h} answered {}",
                msg.envelope.body.kind()
            );
            let share =
                mpw::decode_public_key_switch_share(&ctx, &items(&mut msg).await[0]).unwrap();
            match sum.as_mut() {
                None => sum = Some(share),
                Some(acc) => pcks.aggregate(acc, &share).unwrap(),
            }
        }
        let switched = pcks.finalize(&ct, sum.unwrap()).unwrap();
        let read = ctx.decryptor(&own_sk).unwrap().decrypt(&switched);
        let kf = 2f64.powi(k_exp as i32);
        let recovered_s: Vec<i64> = ctx
            .lift_coefficients(&read)
            .iter()
            .map(|v| (v / kf).round() as i64)
            .collect();
        // the truth: c = (0, K) decrypted with s = Σ s_i (the three secrets on disk)
        let rl = ctx.rlwe();
        let mut s = Poly::zero(ctx.n(), rl.key_basis().len());
        for i in 1..=3 {
            rl.ring()
                .add_assign(&mut s, secret_on_disk(&ctx, &fed, i).poly(), rl.key_basis());
        }
        let s = SecretKey::from_poly(s, *ctx.fingerprint());
        let truth_s: Vec<i64> = ctx
            .lift_coefficients(&ctx.decryptor(&s).unwrap().decrypt(&ct))
            .iter()
            .map(|v| (v / kf).round() as i64)
            .collect();
        for link in links.values() {
            link.close("done");
        }
        (recovered_shares, truth_shares, recovered_s, truth_s)
    });
    for (i, (got, want)) in recovered_shares.iter().zip(&truth_shares).enumerate() {
        assert_eq!(got, want, "keyholder {}'s inference secret", i + 1);
    }
    assert!(truth_s.iter().any(|&c| c != 0));
    assert_eq!(recovered_s, truth_s, "the collective inference secret");
}
