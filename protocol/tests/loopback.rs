//! Real QUIC + mutual TLS on 127.0.0.1: messages, item streams, and the refusals.

use protocol::FederationMsg;
use std::time::Duration;

use protocol::link::{accept_connection, connect, listen};
use protocol::{Body, Party, ProtocolError};

mod common;
use common::{FED, setup};

#[tokio::test]
async fn messages_and_item_streams_cross_a_real_connection() {
    let s = setup();
    let endpoint = listen("127.0.0.1:0".parse().unwrap(), &s.coordinator).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let roster = s.roster.clone();
    let server = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let link = accept_connection(incoming, FED, &roster).await.unwrap();
        assert_eq!(link.peer(), Party::Hospital(1));
        let hello = link.accept().await.unwrap();
        assert!(matches!(
            hello.envelope.body,
            Body::Federation(FederationMsg::Hello { last_round: 0, .. })
        ));
        link.send(
            0,
            Body::Federation(FederationMsg::RoundStart { deadline_ms: 1000 }),
        )
        .await
        .unwrap();
        let mut update = link.accept().await.unwrap();
        assert_eq!(update.envelope.round, 4);
        assert_eq!(
            update.envelope.body,
            Body::Federation(FederationMsg::Update {
                weight: 17,
                count: 3,
                a_seed: [0; 32],
                signature: vec![],
            })
        );
        let mut items = Vec::new();
        while let Some(item) = update.next_item().await.unwrap() {
            items.push(item);
        }
        assert_eq!(items, vec![vec![1u8; 10], vec![2u8; 1 << 20], vec![]]);
        // a message claiming another hospital's identity is refused
        let forged = link.accept().await;
        assert!(
            matches!(forged, Err(ProtocolError::Impersonation { .. })),
            "{forged:?}"
        );
        link.send(0, Body::Federation(FederationMsg::Finished))
            .await
            .unwrap();
    });
    let client = async {
        let link = connect(addr, &s.hospital, FED, 1).await.unwrap();
        link.send(
            0,
            Body::Federation(FederationMsg::Hello {
                software: "test".into(),
                last_round: 0,
                items: 1,
            }),
        )
        .await
        .unwrap();
        let start = link.accept().await.unwrap();
        assert_eq!(
            start.envelope.body,
            Body::Federation(FederationMsg::RoundStart { deadline_ms: 1000 })
        );
        let mut up = link
            .open(
                4,
                Body::Federation(FederationMsg::Update {
                    weight: 17,
                    count: 3,
                    a_seed: [0; 32],
                    signature: vec![],
                }),
            )
            .await
            .unwrap();
        up.item(&[1u8; 10]).await.unwrap();
        up.item(&vec![2u8; 1 << 20]).await.unwrap();
        up.item(&[]).await.unwrap();
        up.finish().await.unwrap();
        // forge: an envelope with another sender, written raw on a stream
        let forged = protocol::Envelope::new(
            FED,
            4,
            Party::Hospital(2),
            Body::Federation(FederationMsg::SetupDone {
                receive_key: vec![],
                signature: vec![],
            }),
        );
        let mut raw = link.open_raw().await.unwrap();
        raw.item(&forged.encode()).await.unwrap();
        raw.finish().await.unwrap();
        let fin = link.accept().await.unwrap();
        assert_eq!(fin.envelope.body, Body::Federation(FederationMsg::Finished));
    };
    tokio::time::timeout(Duration::from_secs(20), async {
        tokio::join!(server, client).0.unwrap()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn certificates_outside_the_consortium_are_refused() {
    let s = setup();
    let endpoint = listen("127.0.0.1:0".parse().unwrap(), &s.coordinator).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let roster = s.roster.clone();
    let server = tokio::spawn(async move {
        let mut outcomes = Vec::new();
        for _ in 0..2 {
            let Some(incoming) = endpoint.accept().await else {
                break;
            };
            outcomes.push(
                accept_connection(incoming, FED, &roster)
                    .await
                    .map(|l| l.peer()),
            );
        }
        outcomes
    });
    // a certificate of another CA fails the handshake
    let foreign = connect(addr, &s.outsider, FED, 1).await;
    // the right CA but a certificate the roster does not list is refused after the handshake
    let stranger = connect(addr, &s.stranger, FED, 9).await;
    let outcomes = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap()
        .unwrap();
    assert!(foreign.is_err() || outcomes.iter().any(|o| o.is_err()));
    assert!(outcomes.iter().all(|o| o.is_err()), "{outcomes:?}");
    assert!(
        outcomes
            .iter()
            .any(|o| matches!(o, Err(ProtocolError::UnknownPeer)))
    );
    drop(stranger);
}

/// A node that was busy when the coordinator said `Finished` and hung up learns from the close
/// reason that the federation is over (and does not reconnect forever); any other close is a
/// plain connection error.
#[tokio::test]
async fn a_finished_close_is_told_apart_from_a_failure() {
    let s = setup();
    let endpoint = listen("127.0.0.1:0".parse().unwrap(), &s.coordinator).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let roster = s.roster.clone();
    let server = tokio::spawn(async move {
        for reason in ["finished", "error"] {
            let incoming = endpoint.accept().await.unwrap();
            let link = accept_connection(incoming, FED, &roster).await.unwrap();
            link.accept().await.unwrap();
            link.close(reason);
        }
    });
    let client = async {
        let mut ends = Vec::new();
        for _ in 0..2 {
            let link = connect(addr, &s.hospital, FED, 1).await.unwrap();
            link.send(
                0,
                Body::Federation(FederationMsg::SetupDone {
                    receive_key: vec![],
                    signature: vec![],
                }),
            )
            .await
            .unwrap();
            ends.push(link.accept().await.map(|_| ()));
        }
        ends
    };
    let ends = tokio::time::timeout(Duration::from_secs(20), async {
        let (srv, ends) = tokio::join!(server, client);
        srv.unwrap();
        ends
    })
    .await
    .expect("bounded");
    assert!(
        matches!(ends[0], Err(ProtocolError::PeerFinished)),
        "{:?}",
        ends[0]
    );
    assert!(
        matches!(ends[1], Err(ProtocolError::Connection(_))),
        "{:?}",
        ends[1]
    );
}

#[tokio::test]
async fn a_peer_that_stops_reading_cannot_hold_a_sender_beyond_the_timeout() {
    let s = setup();
    let endpoint = listen("127.0.0.1:0".parse().unwrap(), &s.coordinator).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let roster = s.roster.clone();
    // the coordinator accepts the connection and the stream's header, then never reads again
    let (stalled_tx, stalled_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let link = accept_connection(incoming, FED, &roster).await.unwrap();
        let header = link.accept().await.unwrap();
        let _ = stalled_rx.await;
        drop(header);
    });
    let link = connect(addr, &s.hospital, FED, 1)
        .await
        .unwrap()
        .with_timeout(Duration::from_secs(1));
    let mut up = link
        .open(
            1,
            Body::Federation(FederationMsg::Update {
                weight: 1,
                count: 64,
                a_seed: [0; 32],
                signature: vec![],
            }),
        )
        .await
        .unwrap();
    // 64 MB into a 16 MB stream window nobody drains: a write times out instead of hanging
    let item = vec![7u8; 1 << 20];
    let outcome = tokio::time::timeout(Duration::from_secs(30), async {
        for _ in 0..64 {
            up.item(&item).await?;
        }
        Ok(())
    })
    .await
    .expect("a write to a peer that does not read returned within 30 s");
    assert!(
        matches!(outcome, Err(ProtocolError::Timeout(_))),
        "{outcome:?}"
    );
    let _ = stalled_tx.send(());
    link.close("done");
    let _ = server.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_delivers_a_small_message_after_the_large_one_queued_before_it() {
    let s = setup();
    let endpoint = listen("127.0.0.1:0".parse().unwrap(), &s.coordinator).unwrap();
    let addr = endpoint.local_addr().unwrap();
    let roster = s.roster.clone();
    let server = tokio::spawn(async move {
        let incoming = endpoint.accept().await.unwrap();
        let link = accept_connection(incoming, FED, &roster).await.unwrap();
        let outbox = protocol::Outbox::spawn(link.clone());
        // 24 items of 1 MB, a part of them shared with other peers, then a bare message
        let shared = std::sync::Arc::new(vec![vec![3u8; 1 << 20]; 16]);
        let items = protocol::Items {
            own: vec![vec![2u8; 1 << 20]; 8],
            shared: Some(shared),
        };
        let update = FederationMsg::Update {
            weight: 1,
            count: 24,
            a_seed: [0; 32],
            signature: vec![],
        };
        outbox.post(Body::Federation(update), items);
        outbox.post(Body::Federation(FederationMsg::Finished), vec![]);
        // the writer sends what was queued before the outbox went
        drop(outbox);
        link.closed().await
    });
    let link = connect(addr, &s.hospital, FED, 1).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), async {
        let mut order = Vec::new();
        for _ in 0..2 {
            let mut m = link.accept().await.unwrap();
            let mut items = Vec::new();
            while let Some(item) = m.next_item().await.unwrap() {
                items.push(item[0]);
            }
            order.push((m.envelope.body.kind(), items));
        }
        order
    })
    .await
    .expect("both messages within 30 s");
    let mut expected = vec![2u8; 8];
    expected.extend([3u8; 16]);
    assert_eq!(got[0], ("update", expected));
    assert_eq!(got[1], ("finished", vec![]));
    link.close("done");
    let _ = server.await;
}
