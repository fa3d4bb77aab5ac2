//! A compromised head-training coordinator (issue 46, item 3): this test plays
//! `coordinator train-head` with the coordinator's real kit against the real
//! `client hold-keys --head` of a trained 3-hospital federation (t = 2) on 127.0.0.1, and tries
//! the ways to the collective secret that worked before 27 November 2026:
//! - it asks for the refresh of a "state" c = (0, K) of its own making: each share would hold
//!   s_i·K, the keyholder's key share (now a keyholder refreshes only the state its own replay of
//!   a signed contribution reached, and the request carries no ciphertext at all);
//! - it starts a run on a contribution of its own making (signed with its own kit, or a
//!   genuine one with a chunk replaced) and asks for the refresh of a state it names;
//! - it relays shares of its own making under another keyholder's signature, to steer the next
//!   step's ciphertexts;
//! - it asks for the trained head's switch before training ended, or to another hospital.
//!
//! Every attempt must be refused, and the genuine run trained: both keyholders reach the state
//! the test replays itself, and only the contributor reads the head, which equals the same steps
//! in plaintext. Every wait is bounded; the children die with the test.

use std::time::Duration;

use coordinator::provision::Roster;
use coordinator::serve::collective::keys::ServedKeys;
use he_agg::ckks::{Ciphertext, wire};
use he_agg::multiparty::wire as mpw;
use he_agg::ring::Prng;
use he_agg::train::{
    EncryptedChunk, HeadRun, PlainHead, RunSettings, decode_chunks, encrypt_chunk, schedule,
    state_digest,
};
use protocol::link::listen;
use protocol::serve::head::{
    HeadContribution, HeadRefreshRelay, HeadRefreshRequest, HeadStart, HeadTraining,
    ResultSwitchRequest,
};
use protocol::tls::TlsFiles;
use protocol::transcript::{Signer, digest};
use protocol::{Body, HeadMsg, Link};

mod common;
use common::Procs;
use common::serving_host::{
    WAIT, accept_all, answer, constant, head_keyholder, honest_setup, items, log_of, send,
    send_refusable, trained_collective_of,
};

const QUIET: Duration = Duration::from_secs(3);

/// Nothing comes from `link` for a while: the last request was refused.
async fn silent(link: &Link, what: &str) {
    if let Some(m) = answer(link, QUIET).await {
        panic!("{what}: answered {}", m.envelope.body.kind());
    }
}

#[test]
fn a_compromised_head_training_host_reads_no_key_share_and_steers_no_step() {
    // one channel: a head of 144 features (9 groups of 16) where four channels made 576 (36),
    // a quarter of each step's work for the four parties that replay it; the refusals and the
    // protocol do not depend on the head's size
    let config = common::collective_config().replace("channels = 4\n", "channels = 1\n");
    assert!(!config.contains("channels = 4\n") && config.contains("channels = 1\n"));
    let fed = trained_collective_of(&config);
    let roster = Roster::read(&fed.coordinator_dir.join("roster.toml"))
        .unwrap()
        .parties();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let addr = format!("127.0.0.1:{}", common::free_port());
    let endpoint = listen(
        addr.parse().unwrap(),
        &TlsFiles::in_dir(&fed.coordinator_dir),
    )
    .unwrap();
    let _keyholders = Procs((1..=3).map(|i| head_keyholder(&fed, i, &addr)).collect());
    let training = HeadTraining {
        epochs: 1,
        batch_chunks: 1,
        lr: 1.0,
        momentum: 0.5,
    };

    rt.block_on(async {
        let links = accept_all(&endpoint, &fed, &roster, 3).await;
        let mut keys = ServedKeys::for_head(fed.federation, 3, training.clone());
        honest_setup(&links, &mut keys, 2).await;
        let setup = keys.setup().unwrap();
        let plan = keys.compiled().unwrap().head().unwrap().clone();
        let ctx = plan.context().clone();
        let (pk, eval) = keys
            .head_keys()
            .map(|(p, e)| (p.clone(), e.clone()))
            .unwrap();
        let pk_bytes = keys.public_key_bytes().unwrap().to_vec();
        let active = vec![1u32, 2];
        let refresh_request = |request: u64, step: u64, state: [u8; 32], count: usize| {
            Body::Head(HeadMsg::HeadRefresh(HeadRefreshRequest {
                setup,
                request,
                attempt: 0,
                request_id: 7,
                step,
                // 1 epoch of 2 chunks, one per batch
                steps: 2,
                contributor: 1,
                active: active.clone(),
                count: count as u32,
                state,
            }))
        };

        // 1. the refresh of a state (0, K) of the server's making, as the old protocol sent it
        let level = plan.scales().refresh_level;
        let q = ctx.rlwe().q_basis(level).to_vec();
        let crafted = Ciphertext {
            parts: vec![constant(&ctx, &q, 0), constant(&ctx, &q, 1 << 58)],
            scale: plan.scales().weight,
        };
        let crafted_bytes = wire::encode_ciphertext(&ctx, &crafted);
        let crafted_state = state_digest(&ctx, std::slice::from_ref(&crafted));
        for h in &active {
            send_refusable(
                &links[h],
                refresh_request(1, 1, crafted_state, 1),
                std::slice::from_ref(&crafted_bytes),
            )
            .await;
            silent(&links[h], "a refresh of the server's own ciphertext").await;
        }

        // hospital 1's genuine contribution: a receiving key made here, 1.5 chunks of examples
        let layout = plan.layout();
        let n = layout.samples() + layout.samples() / 2;
        let mut prng = Prng::from_seed(&[3; 32]);
        let mut u = || (prng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 1.6 - 0.8;
        let xs: Vec<Vec<f64>> = (0..n)
            .map(|_| (0..layout.features()).map(|_| u()).collect())
            .collect();
        let ys: Vec<u32> = (0..n).map(|i| (i % layout.classes()) as u32).collect();
        let mut enc = ctx.pk_encryptor(&pk).unwrap();
        let chunks: Vec<EncryptedChunk> = xs
            .chunks(layout.samples())
            .zip(ys.chunks(layout.samples()))
            .map(|(x, y)| {
                let xr: Vec<&[f64]> = x.iter().map(Vec::as_slice).collect();
                encrypt_chunk(&ctx, &mut enc, layout, &xr, y).unwrap()
            })
            .collect();
        let mut kg = ctx.key_generator().unwrap();
        let receiver_sk = kg.secret_key();
        let mut contribution = vec![wire::encode_public_key(&ctx, &kg.public_key(&receiver_sk))];
        for ch in &chunks {
            contribution.extend(ch.features.iter().map(|c| wire::encode_ciphertext(&ctx, c)));
            contribution.push(wire::encode_ciphertext(&ctx, &ch.labels));
        }
        let mut header = HeadContribution {
            request_id: 7,
            fingerprint: plan.fingerprint(),
            examples: n as u64,
            chunks: chunks.len() as u32,
            ciphertexts_per_chunk: (layout.groups() + 1) as u32,
            counts: chunks.iter().map(|c| c.count as u32).collect(),
            training: training.clone(),
            signature: Vec::new(),
        };
        let sign = |signer: &Signer, header: &HeadContribution, items: &[Vec<u8>]| {
            signer.sign(&header.statement(fed.federation, 1, items.iter().map(Vec::as_slice)))
        };
        let hospital_1 = Signer::from_files(&TlsFiles::in_dir(&fed.hospital_dirs[0])).unwrap();
        let server = Signer::from_files(&TlsFiles::in_dir(&fed.coordinator_dir)).unwrap();
        header.signature = sign(&hospital_1, &header, &contribution);
        let start = |signed: &HeadContribution| {
            Body::Head(HeadMsg::HeadStart(HeadStart {
                setup,
                contributor: 1,
                signed: signed.clone(),
            }))
        };
        let with_key = |items: &[Vec<u8>]| {
            let mut all = vec![pk_bytes.clone()];
            all.extend(items.iter().cloned());
            all
        };

        // 2. a contribution of the server's making (signed with its own kit, as hospital 1's),
        //    then a genuine one with a chunk ciphertext replaced by (0, K) at its level; a
        //    refresh of either is refused (no run)
        let mut forged = header.clone();
        forged.signature = sign(&server, &forged, &contribution);
        let mut altered = contribution.clone();
        let top = ctx.rlwe().q_basis(plan.scales().top).to_vec();
        altered[1] = wire::encode_ciphertext(
            &ctx,
            &Ciphertext {
                parts: vec![constant(&ctx, &top, 0), constant(&ctx, &top, 1 << 58)],
                scale: chunks[0].features[0].scale,
            },
        );
        for h in &active {
            send_refusable(&links[h], start(&forged), &with_key(&contribution)).await;
            send_refusable(&links[h], start(&header), &with_key(&altered)).await;
            send(&links[h], refresh_request(2, 1, crafted_state, 1), &[]).await;
            silent(&links[h], "a refresh of a forged or altered contribution").await;
        }

        // the genuine run starts at every keyholder; the test replays it as the server would
        for link in links.values() {
            send(link, start(&header), &with_key(&contribution)).await;
        }
        let seed = digest(
            &header
                .statement(fed.federation, 1, contribution.iter().map(Vec::as_slice))
                .message(),
        );
        let settings = RunSettings {
            epochs: 1,
            batch_chunks: 1,
            lr: 1.0,
            momentum: 0.5,
        };
        let mut mine = HeadRun::new(
            plan.clone(),
            &pk,
            &eval,
            settings,
            &seed,
            &fed.federation.0,
            (3, 2),
            decode_chunks(&plan, &header.counts, &contribution[1..]).unwrap(),
        )
        .unwrap();
        let steps = mine.steps().0;
        assert_eq!(steps, 2);
        let mut request = 10;
        for step in 1..=steps as u64 {
            mine.compute_step().unwrap();
            let count = mine.pending().len();
            let state = state_digest(&ctx, mine.pending());
            // 3. a state other than the replay's, named by the server: refused
            request += 1;
            for h in &active {
                send(
                    &links[h],
                    refresh_request(request, step, crafted_state, count),
                    &[],
                )
                .await;
                silent(
                    &links[h],
                    "a refresh of a state the keyholder never reached",
                )
                .await;
            }
            request += 1;
            let mut signed = Vec::new();
            for h in &active {
                send(&links[h], refresh_request(request, step, state, count), &[]).await;
                let mut msg = answer(&links[h], WAIT).await.expect("refresh shares");
                let Body::Head(HeadMsg::HeadRefreshShares(s)) = msg.envelope.body.clone() else {
                    panic!("keyholder {h} answered {}", msg.envelope.body.kind())
                };
                assert_eq!((s.step, s.state), (step, state), "keyholder {h}'s replay");
                signed.push((*h, s.signature, items(&mut msg).await));
            }
            let relay = |from: Vec<(u32, Vec<u8>)>| {
                Body::Head(HeadMsg::HeadRefreshRelay(HeadRefreshRelay {
                    request_id: 7,
                    step,
                    attempt: 0,
                    count: count as u32,
                    from,
                }))
            };
            let from: Vec<(u32, Vec<u8>)> =
                signed.iter().map(|(h, s, _)| (*h, s.clone())).collect();
            let genuine: Vec<Vec<u8>> = signed.iter().flat_map(|(_, _, i)| i.clone()).collect();
            if step == 1 {
                // 4. hospital 2's shares replaced by the server's (hospital 1's again) under
                //    hospital 2's signature: keyholder 1 refuses and keeps waiting
                let mut steered = signed[0].2.clone();
                steered.extend(signed[0].2.iter().cloned());
                send(&links[&1], relay(from.clone()), &steered).await;
            }
            for link in links.values() {
                send(link, relay(from.clone()), &genuine).await;
            }
            let mut sums = Vec::new();
            for i in 0..count {
                let mut acc = mpw::decode_refresh_share(&ctx, &signed[0].2[i]).unwrap();
                let other = mpw::decode_refresh_share(&ctx, &signed[1].2[i]).unwrap();
                mine.refresh().aggregate(&mut acc, &other).unwrap();
                sums.push(acc);
            }
            mine.finish_refresh(&sums).unwrap();
        }
        assert!(mine.finished());

        // 5. the switch to a hospital other than the contributor: refused; then the genuine one
        let switch = |request: u64, requester: u32| {
            Body::Head(HeadMsg::ResultSwitch(ResultSwitchRequest {
                setup,
                request,
                attempt: 0,
                requester,
                request_id: 7,
                active: active.clone(),
                count: mine.weights().len() as u32,
            }))
        };
        let pcks = plan.head_switch(3, 2).unwrap();
        let mut sums: Vec<Option<_>> = vec![None; mine.weights().len()];
        for h in &active {
            send(&links[h], switch(100, 2), &[]).await;
            silent(
                &links[h],
                "a switch to another hospital than the contributor",
            )
            .await;
            send(&links[h], switch(101, 1), &[]).await;
            let mut msg = answer(&links[h], WAIT).await.expect("switching shares");
            assert!(matches!(
                msg.envelope.body,
                Body::Head(HeadMsg::ResultShares(_))
            ));
            for (i, b) in items(&mut msg).await.iter().enumerate() {
                let share = mpw::decode_public_key_switch_share(&ctx, b).unwrap();
                match sums[i].as_mut() {
                    None => sums[i] = Some(share),
                    Some(acc) => pcks.aggregate(acc, &share).unwrap(),
                }
            }
        }
        let dec = ctx.decryptor(&receiver_sk).unwrap();
        let slots: Vec<Vec<f64>> = mine
            .weights()
            .iter()
            .zip(sums)
            .map(|(ct, s)| {
                let switched = pcks.finalize(ct, s.unwrap()).unwrap();
                ctx.decode_reals(&dec.decrypt(&switched)).unwrap()
            })
            .collect();
        let mut plain = PlainHead::zeros(layout.features(), layout.classes());
        for batch in schedule(chunks.len(), 1, 1) {
            let sel: Vec<usize> = batch
                .iter()
                .flat_map(|&c| c * layout.samples()..((c + 1) * layout.samples()).min(n))
                .collect();
            let bx: Vec<&[f64]> = sel.iter().map(|&i| xs[i].as_slice()).collect();
            let by: Vec<u32> = sel.iter().map(|&i| ys[i]).collect();
            plain.step(&bx, &by, 1.0, 0.5);
        }
        let mut w = vec![0.0; plain.w.len()];
        for (g, group) in slots.iter().take(layout.groups()).enumerate() {
            layout.unpack_weights(group, g, &mut w);
        }
        let err = w
            .iter()
            .zip(&plain.w)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        assert!(
            err < 1e-3,
            "the contributor reads the plaintext head: off by {err}"
        );
        for link in links.values() {
            link.close("done");
        }
    });
    let log = log_of(&fed, 1);
    assert!(
        log.contains("contribution 7 is not being trained here"),
        "{log}"
    );
    assert!(
        log.contains("contribution 7 as hospital 1 signed it, or its key, chunks or training"),
        "{log}"
    );
    assert!(
        log.contains("other than the one this keyholder computed"),
        "{log}"
    );
    assert!(
        log.contains("relayed as hospital 2's that it did not sign for this state"),
        "{log}"
    );
    assert!(
        log.contains("another hospital than its contributor"),
        "{log}"
    );
    assert_eq!(
        log.matches("refused to train on the contribution").count(),
        2,
        "{log}"
    );
}
