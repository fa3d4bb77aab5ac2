//! A compromised serving host (issue 46, item 1): this test plays the mode (a) serving
//! coordinator with the coordinator's real kit against the real `client hold-keys` of a trained
//! 3-hospital federation (t = 2) on 127.0.0.1, and tries to read the collective inference
//! secret the ways that worked before 25 November 2026:
//! - in setup, it hands a keyholder a round-1 relinearization "sum" of its own (a constant K): a
//!   keyholder that makes its round-2 share on it returns s_i·K + e, its secret share (now each
//!   keyholder checks every keyholder's signed shares and makes the sum itself);
//! - serving, it asks t keyholders to switch a "result" c = (0, K) to a key of its own, which
//!   decrypts to K·s + flooding, the collective secret (now a keyholder switches only its own
//!   evaluation of a request its requester signed, to the key the requester signed);
//! - it alters a genuinely signed request: its own key in the requester's place, or a crafted
//!   image in place of one of the requester's.
//!
//! Every attempt must be refused, and the genuine request served: both keyholders compute the
//! same results and only the requester reads the logits, which are the plaintext network's.
//! Every wait is bounded; the children die with the test.

use protocol::{CollectiveMsg, HeadMsg};
use std::time::Duration;

use coordinator::provision::Roster;
use coordinator::serve::collective::keys::{KeyPlan, ServedKeys};
use he_agg::ckks::{Ciphertext, wire};
use he_agg::infer::threshold::served_combiner;
use he_agg::multiparty::{RelinKeyShare1, wire as mpw};
use protocol::Body;
use protocol::link::listen;
use protocol::serve::collective::{CollectiveRequest, EvaluateRequest};
use protocol::serve::head::ResultSwitchRequest;
use protocol::tls::TlsFiles;

mod common;
use common::serving_host::{
    WAIT, accept_all, accept_keyholder, answer, collect_round1, constant, final_network,
    finish_setup, genuine_request, items, keyholder, log_of, send, send_refusable,
    switched_to_requester,
};
use common::{Procs, free_port, trained};

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

#[test]
fn a_compromised_serving_host_reads_no_inference_key_and_alters_no_request() {
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
    let net = final_network(&fed);

    rt.block_on(async {
        let mut links = accept_all(&endpoint, &fed, &roster, 3).await;
        // round 1, collected as an honest server would
        let mut keys = ServedKeys::new(fed.federation, 3, 4);
        collect_round1(&links, &mut keys, 2).await;
        let ctx = keys.compiled().unwrap().ctx.clone();
        let basis = ctx.rlwe().key_basis().to_vec();

        // 1. keyholder 1 is relayed hospital 2's relinearization share replaced by one of the
        //    server's making (h0 = K, h1 = 0, minus the others: the sum it wants), with
        //    hospital 2's signature: refused, no round-2 share leaves
        const K: u128 = 1 << 20;
        let (body, mut crafted) = keys.round1_result(1).unwrap();
        let digits = mpw::decode_relin_share1(&ctx, &crafted[1])
            .unwrap()
            .parts()
            .0
            .len();
        crafted[3] = mpw::encode_relin_share1(
            &ctx,
            &RelinKeyShare1::from_parts(
                (0..digits).map(|_| constant(&ctx, &basis, K)).collect(),
                (0..digits).map(|_| constant(&ctx, &basis, 0)).collect(),
            ),
        );
        send_refusable(&links[&1], body, &crafted).await;
        for h in [2u32, 3] {
            let (body, its) = keys.round1_result(h).unwrap();
            send(&links[&h], body, &its).await;
        }
        // keyholder 1 drops the session and comes back; 2 and 3 answer
        let (back, link) = accept_keyholder(&endpoint, &fed, &roster).await;
        assert_eq!(back, 1, "keyholder 1 reconnects after refusing");
        assert!(
            log_of(&fed, 1)
                .contains("hospital 2's signature over its inference key shares does not verify"),
            "{}",
            log_of(&fed, 1)
        );
        links.insert(1, link);
        // relayed honestly now
        let (body, its) = keys.round1_result(1).unwrap();
        send(&links[&1], body, &its).await;
        finish_setup(&links, &mut keys).await;
        let setup = keys.setup().unwrap();
        let compiled = keys.compiled().unwrap();
        let KeyPlan::Served { plan, .. } = &compiled.plan else {
            panic!("a served plan")
        };
        let spec = plan.spec().clone();
        let collective = wire::decode_public_key(&ctx, keys.public_key_bytes().unwrap()).unwrap();

        // the server's own key, and a "result" c = (0, K) at the results' level
        let mut kg = ctx.key_generator().unwrap();
        let own_sk = kg.secret_key();
        let own_pk = wire::encode_public_key(&ctx, &kg.public_key(&own_sk));
        let level = spec.output_level();
        let q_basis = ctx.rlwe().q_basis(level).to_vec();
        let crafted_ct = Ciphertext {
            parts: vec![
                constant(&ctx, &q_basis, 0),
                constant(&ctx, &q_basis, 1 << 60),
            ],
            scale: spec.input_scale(),
        };
        let active = vec![1u32, 2];
        // 2. the switch of a ciphertext the server sent, to its own key (what worked before)
        for h in &active {
            send_refusable(
                &links[h],
                Body::Head(HeadMsg::ResultSwitch(ResultSwitchRequest {
                    setup,
                    request: 1,
                    attempt: 0,
                    requester: 1,
                    request_id: 1,
                    active: active.clone(),
                    count: 1,
                })),
                &[own_pk.clone(), wire::encode_ciphertext(&ctx, &crafted_ct)],
            )
            .await;
        }

        // a genuine request of hospital 1: its key, one image encrypted under the collective key,
        // signed with its kit
        let g = genuine_request(&fed, &ctx, &spec, &collective, net.input_len(), 41);
        let (signed, genuine) = (g.signed.clone(), g.items.clone());
        let evaluate = |request: u64, signed: &CollectiveRequest| {
            Body::Collective(CollectiveMsg::CollectiveEvaluate(EvaluateRequest {
                setup,
                request,
                attempt: 0,
                active: active.clone(),
                requester: 1,
                signed: signed.clone(),
            }))
        };
        // 3. the server's own key in the requester's place; 4. a crafted image in place of the
        //    requester's; 5. no signature at all; then 6. the genuine request
        let mut own_key = genuine.clone();
        own_key[0] = own_pk.clone();
        let mut crafted_image = genuine.clone();
        let crafted_input = Ciphertext {
            parts: vec![
                constant(&ctx, ctx.rlwe().q_basis(spec.input_level()), 0),
                constant(&ctx, ctx.rlwe().q_basis(spec.input_level()), 1 << 60),
            ],
            scale: spec.input_scale(),
        };
        crafted_image[1] = wire::encode_ciphertext(&ctx, &crafted_input);
        let mut unsigned = signed.clone();
        unsigned.signature = vec![0; 70];
        for h in &active {
            send_refusable(&links[h], evaluate(3, &signed), &own_key).await;
            send_refusable(&links[h], evaluate(4, &signed), &crafted_image).await;
            send_refusable(&links[h], evaluate(5, &unsigned), &genuine).await;
            send(&links[h], evaluate(6, &signed), &genuine).await;
        }
        let pcks = served_combiner(&ctx, 3, 2).unwrap();
        let mut results: Vec<Vec<u8>> = Vec::new();
        let mut sum = None;
        for h in &active {
            let mut msg = answer(&links[h], WAIT)
                .await
                .expect("an answer to the genuine request");
            let Body::Collective(CollectiveMsg::CollectiveEvaluated(a)) = msg.envelope.body.clone()
            else {
                panic!("keyholder {h} answered {}", msg.envelope.body.kind())
            };
            assert_eq!(
                a.request, 6,
                "keyholder {h} served altered request {}",
                a.request
            );
            let its = items(&mut msg).await;
            assert_eq!(its.len(), 2);
            // both keyholders computed the same result from the same signed request
            if results.is_empty() {
                results.push(its[0].clone());
            } else {
                assert_eq!(results[0], its[0], "the keyholders' results differ");
            }
            let share = mpw::decode_public_key_switch_share(&ctx, &its[1]).unwrap();
            match sum.as_mut() {
                None => sum = Some(share),
                Some(acc) => pcks.aggregate(acc, &share).unwrap(),
            }
        }
        // nothing else came: every altered request was refused
        for h in &active {
            assert!(
                answer(&links[h], Duration::from_secs(3)).await.is_none(),
                "keyholder {h} answered an altered request"
            );
        }
        let switched =
            switched_to_requester(&ctx, &spec, &net, &g, &pcks, &results[0], sum.unwrap());
        let want = net.forward(&g.x).unwrap();
        // the server's own key reads nothing of it
        let read = spec
            .decode_output(&ctx, &ctx.decryptor(&own_sk).unwrap().decrypt(&switched))
            .unwrap();
        assert!(
            read.iter()
                .zip(&want)
                .any(|(a, b)| (a - f64::from(*b)).abs() > 1e3),
            "the server's key read the result"
        );
        for link in links.values() {
            link.close("done");
        }
    });
    for i in 1..=2 {
        let log = log_of(&fed, i);
        assert!(
            log.contains(
                "asked to train, refresh or switch a head while holding a served model's key"
            ),
            "{log}"
        );
        assert_eq!(
            log.matches("refused to serve").count(),
            3,
            "keyholder {i} refused the three altered requests: {log}"
        );
    }
}
