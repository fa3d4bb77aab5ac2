//! A compromised serving host and a deep model in mode (a): this test plays the serving
//! coordinator with the coordinator's real kit against the real `client hold-keys` of a trained
//! 2-hospital federation (t = 2) whose residual network is cut into segments. Between two
//! segments each switching keyholder sends its signed refresh shares; the host relays to
//! keyholder 1 a set in which hospital 2's shares are replaced by shares of its own making
//! under hospital 2's signature (whoever picks a refreshed state's c0 steers the next
//! segment's ciphertexts). Keyholder 1 must refuse it, keep waiting, and finish the request
//! when the genuine shares are relayed; the requester must read the plaintext network's logits.
//! Every wait is bounded; the children die with the test.

use std::collections::BTreeMap;

use coordinator::provision::Roster;
use coordinator::serve::collective::keys::{KeyPlan, ServedKeys};
use he_agg::ckks::wire;
use he_agg::infer::threshold::served_combiner;
use he_agg::multiparty::wire as mpw;
use protocol::link::listen;
use protocol::serve::collective::{EvaluateRequest, RefreshRelay};
use protocol::tls::TlsFiles;
use protocol::{Body, CollectiveMsg};

mod common;
use common::serving_host::{
    WAIT, accept_all, answer, final_network, genuine_request, honest_setup, items, keyholder,
    log_of, send, switched_to_requester,
};
use common::{Procs, free_port, trained};

/// The shipped `configs/resnet-mini-collective.toml` (2 hospitals, t = 2, one round of a small
/// residual network, cut into segments in mode a), the coordinator at `port`.
fn config(port: u16) -> String {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../configs/resnet-mini-collective.toml"
    );
    std::fs::read_to_string(path).unwrap().replacen(
        "[federation]\n",
        &format!(
            "[federation]\ncoordinator_address = \"127.0.0.1:{port}\"\nlisten = \"127.0.0.1:{port}\"\n"
        ),
        1,
    )
}

#[test]
fn a_keyholder_combines_only_refresh_shares_their_keyholders_signed() {
    let fed = trained(&config(free_port()));
    let roster = Roster::read(&fed.coordinator_dir.join("roster.toml"))
        .unwrap()
        .parties();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _guard = rt.enter();
    let addr = format!("127.0.0.1:{}", free_port());
    let endpoint = listen(
        addr.parse().unwrap(),
        &TlsFiles::in_dir(&fed.coordinator_dir),
    )
    .unwrap();
    let _keyholders = Procs((1..=2).map(|i| keyholder(&fed, i, &addr)).collect());
    let net = final_network(&fed);

    rt.block_on(async {
        let links = accept_all(&endpoint, &fed, &roster, 2).await;
        let mut keys = ServedKeys::new(fed.federation, 2, 4);
        honest_setup(&links, &mut keys, 2).await;
        let setup = keys.setup().unwrap();
        let ctx = keys.compiled().unwrap().ctx.clone();
        let KeyPlan::Served { plan, .. } = &keys.compiled().unwrap().plan else {
            panic!("a served plan")
        };
        let spec = plan.spec().clone();
        let refreshes = spec.refreshes().len();
        assert!(refreshes >= 1, "the served plan is not cut");
        let collective = wire::decode_public_key(&ctx, keys.public_key_bytes().unwrap()).unwrap();

        // a genuine request of hospital 1, signed with its kit
        let g = genuine_request(&fed, &ctx, &spec, &collective, net.input_len(), 7);
        let (signed, request) = (g.signed.clone(), g.items.clone());
        let active = vec![1u32, 2];
        for h in &active {
            let body = Body::Collective(CollectiveMsg::CollectiveEvaluate(EvaluateRequest {
                setup,
                request: 1,
                attempt: 0,
                active: active.clone(),
                requester: 1,
                signed: signed.clone(),
            }));
            send(&links[h], body, &request).await;
        }

        let pcks = served_combiner(&ctx, 2, 2).unwrap();
        let mut results: Vec<Vec<u8>> = Vec::new();
        let mut sum = None;
        let mut forged = false;
        // every refresh's shares gathered and relayed, then the results and switching shares
        let mut pending: BTreeMap<u32, (Vec<u8>, Vec<Vec<u8>>)> = BTreeMap::new();
        let mut index = 0u32;
        let mut finished = 0;
        // one reader per switching keyholder: whole messages (header and items) into one queue
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for h in &active {
            let (h, link, tx) = (*h, links[h].clone(), tx.clone());
            tokio::spawn(async move {
                while let Some(mut msg) = answer(&link, WAIT).await {
                    let its = items(&mut msg).await;
                    if tx.send((h, msg.envelope.body.clone(), its)).is_err() {
                        break;
                    }
                }
            });
        }
        while finished < active.len() {
            let (h, body, its) = tokio::time::timeout(WAIT, rx.recv())
                .await
                .expect("a keyholder's answer in time")
                .expect("the readers run");
            match body {
                Body::Collective(CollectiveMsg::CollectiveRefreshShares(s)) => {
                    assert_eq!((s.request, s.index), (1, index));
                    pending.insert(h, (s.signature, its));
                    if pending.len() < active.len() {
                        continue;
                    }
                    let relay = |from: Vec<(u32, Vec<u8>)>| {
                        Body::Collective(CollectiveMsg::CollectiveRefreshRelay(RefreshRelay {
                            request: 1,
                            attempt: 0,
                            index,
                            count: 1,
                            from,
                        }))
                    };
                    let from: Vec<(u32, Vec<u8>)> =
                        active.iter().map(|a| (*a, pending[a].0.clone())).collect();
                    let genuine: Vec<Vec<u8>> =
                        active.iter().map(|a| pending[a].1[0].clone()).collect();
                    if !forged {
                        // hospital 2's shares replaced by shares the host made (keyholder 1's
                        // own, well formed) under hospital 2's signature
                        forged = true;
                        let made = vec![genuine[0].clone(), genuine[0].clone()];
                        send(&links[&1], relay(from.clone()), &made).await;
                        let went_on =
                            tokio::time::timeout(std::time::Duration::from_secs(5), rx.recv())
                                .await;
                        assert!(
                            went_on.is_err(),
                            "a keyholder went on with shares hospital 2 did not sign"
                        );
                    }
                    for a in &active {
                        send(&links[a], relay(from.clone()), &genuine).await;
                    }
                    pending.clear();
                    index += 1;
                }
                Body::Collective(CollectiveMsg::CollectiveEvaluated(_)) => {
                    assert_eq!(its.len(), 2);
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
                    finished += 1;
                }
                other => panic!("keyholder {h} sent {}", other.kind()),
            }
        }
        assert_eq!(index as usize, refreshes, "one relay per refresh");
        switched_to_requester(&ctx, &spec, &net, &g, &pcks, &results[0], sum.unwrap());
        for link in links.values() {
            link.close("done");
        }
    });
    let log = log_of(&fed, 1);
    assert!(
        log.contains("refresh shares relayed as hospital 2's that it did not sign"),
        "{log}"
    );
    assert!(
        log.matches("refreshing a served request's segment output")
            .count()
            > refreshes_of(&fed),
        "{log}"
    );
}

/// Refreshes of the served plan (keyholder 1 logs one more: the forged relay it refused).
fn refreshes_of(fed: &common::Fed) -> usize {
    he_agg::infer::InferencePlan::new(
        &final_network(fed),
        &he_agg::infer::threshold::served_policy(),
    )
    .unwrap()
    .spec()
    .refreshes()
    .len()
}
