//! `[train] scaffold` end to end with the real binaries, encrypted: every hospital sends its
//! control variate's change in the same sum as its model update, and every hospital ends with
//! the same federation variate c, the sample-weighted mean of the hospitals' own cᵢ (every
//! hospital contributed to every round), and the same model.

use serde::Deserialize;

mod common;
use common::{breastmnist_sections, free_port, trained};

/// `scaffold.bin` as the node writes it (postcard, framed by `ops::checked_file`).
#[derive(Deserialize)]
struct Variates {
    round: u64,
    c: Vec<f32>,
    c_i: Vec<f32>,
    pending: Option<(u64, Vec<f32>)>,
}

fn config(scaffold: bool) -> String {
    let port = free_port();
    let sections = breastmnist_sections(5).replace(
        "schedule = \"constant\"",
        &format!("schedule = \"constant\"\nscaffold = {scaffold}"),
    );
    format!(
        r#"
[federation]
name = "scaffold"
hospitals = 3
threshold = 2
rounds = 2
round_timeout_s = 300
coordinator_address = "127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
{sections}"#
    )
}

/// Bytes every hospital sent in every round (updates and switching shares).
fn sent(fed: &common::Fed) -> u64 {
    (1..=3)
        .map(|i| {
            let path = fed.root.join(format!("node-{i}/metrics.csv"));
            let rows = ops::metrics_file::parse(&std::fs::read_to_string(path).unwrap()).unwrap();
            rows.iter().map(|r| r.bytes_up).sum::<u64>()
        })
        .sum()
}

#[test]
fn scaffold_federations_share_one_control_variate_the_weighted_mean_of_the_hospitals() {
    let fed = trained(&config(true));
    let node = |i: usize| fed.root.join(format!("node-{i}"));
    let mut variates = Vec::new();
    let mut samples = Vec::new();
    for i in 1..=3 {
        let bytes = std::fs::read(node(i).join("state/scaffold.bin")).unwrap();
        let v: Variates =
            postcard::from_bytes(ops::checked_file::unframe(&bytes).unwrap()).unwrap();
        assert_eq!(v.round, 2, "hospital {i} applied both rounds to c");
        assert!(
            v.pending.is_none(),
            "hospital {i}'s last change was applied"
        );
        let text = std::fs::read_to_string(node(i).join("metrics.csv")).unwrap();
        let rows = ops::metrics_file::parse(&text).unwrap();
        assert_eq!(rows.len(), 2);
        samples.push(rows[0].samples as f64);
        variates.push(v);
    }
    let model = |i: usize| std::fs::read(node(i).join("model.f32")).unwrap();
    assert!(model(1) == model(2) && model(2) == model(3));
    let n: f64 = samples.iter().sum();
    let c = &variates[0].c;
    let scale = c.iter().fold(0f32, |m, x| m.max(x.abs()));
    assert!(scale > 1e-3, "c moved ({scale})");
    assert!(
        variates[0].c_i != variates[1].c_i,
        "each hospital has its own cᵢ"
    );
    for (i, v) in variates.iter().enumerate() {
        assert_eq!(&v.c, c, "hospital {} holds another c", i + 1);
    }
    // c = Σ (nᵢ/n)·cᵢ, up to the encryption's precision over two rounds
    let mut worst = 0f64;
    for (j, &cj) in c.iter().enumerate() {
        let mean: f64 = (variates.iter().zip(&samples))
            .map(|(v, &s)| s / n * v.c_i[j] as f64)
            .sum();
        worst = worst.max((cj as f64 - mean).abs());
    }
    assert!(
        worst < 1e-4 * (1.0 + scale as f64),
        "c is {worst} away from the weighted mean of the hospitals' variates (largest |c| {scale})"
    );

    // the same federation without SCAFFOLD sends half the values
    let plain = trained(&config(false));
    let ratio = sent(&fed) as f64 / sent(&plain) as f64;
    assert!(
        (1.8..2.2).contains(&ratio),
        "the federation with the control variates sent {ratio}× the bytes of one without"
    );
    assert!(!plain.root.join("node-1/state/scaffold.bin").exists());
}
