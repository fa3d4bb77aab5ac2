//! `coordinator status`: the federation, its hospitals, the committed rounds and the audit log,
//! read from the state store.

use anyhow::Context;

use crate::config::FederationConfig;
use crate::provision::Roster;
use crate::server::CoordinatorDir;
use crate::store::Store;

pub fn print(dir: &CoordinatorDir, audit_lines: usize) -> anyhow::Result<()> {
    let cfg = FederationConfig::from_file(&dir.config())?;
    let roster = Roster::read(&dir.roster())?;
    let store = Store::open_existing(&dir.state()).with_context(|| {
        format!(
            "cannot open {} (is the coordinator running?)",
            dir.state().display()
        )
    })?;
    println!(
        "federation \"{}\" ({})",
        cfg.federation.name, roster.federation
    );
    println!(
        "  {} hospitals, threshold {}, quorum {}, {} rounds, {}",
        cfg.federation.hospitals,
        cfg.threshold(),
        cfg.min_hospitals(),
        cfg.rounds(),
        if cfg.he.plaintext {
            "plaintext (no encryption)".to_string()
        } else {
            format!("CKKS aggregation preset, flooding λ = {}", cfg.he.lambda)
        }
    );
    println!("  phase: {:?}", store.phase()?);
    println!(
        "  collective public key: {}",
        if store.collective_public_key()?.is_some() {
            "made"
        } else {
            "not yet"
        }
    );
    println!("hospitals:");
    let parties = store.parties()?;
    for h in &roster.hospital {
        let rec = parties
            .iter()
            .find(|(i, _)| *i == h.index)
            .map(|(_, r)| r.clone())
            .unwrap_or_default();
        println!(
            "  {:>3} {:<14} key shares: {:<3} dealt: {:<3} setup done: {:<3} cert {}…",
            h.index,
            h.name,
            if rec.public_key_share.is_some() {
                "yes"
            } else {
                "no"
            },
            if rec.dealt { "yes" } else { "no" },
            if rec.setup_done { "yes" } else { "no" },
            &h.fingerprint[..16]
        );
    }
    let rounds = store.rounds()?;
    println!("rounds committed: {}", rounds.len());
    for r in &rounds {
        println!(
            "  round {:>3}: updates from {:?} (weight {}), re-encrypted by {:?}, sent to {:?}, {:.1} MB up, {:.1} MB down",
            r.round,
            r.participants.iter().map(|p| p.0).collect::<Vec<_>>(),
            r.total_weight,
            r.switchers,
            r.receivers,
            r.bytes_up as f64 / 1e6,
            r.bytes_down as f64 / 1e6
        );
    }
    let metrics = store.metrics()?;
    if let Some(last) = metrics.iter().map(|(_, m)| m.round).max() {
        let lastm: Vec<_> = metrics.iter().filter(|(_, m)| m.round == last).collect();
        let mean = |f: fn(&protocol::message::RoundMetrics) -> f32| {
            lastm.iter().map(|(_, m)| f(m) as f64).sum::<f64>() / lastm.len() as f64
        };
        println!(
            "latest metrics (round {last}, {} hospitals): test acc {:.4}, test AUC {:.4}",
            lastm.len(),
            mean(|m| m.test_acc),
            mean(|m| m.test_auc)
        );
    }
    let log = store.audit_log()?;
    println!(
        "audit log ({} entries, last {}):",
        log.len(),
        audit_lines.min(log.len())
    );
    for e in log.iter().skip(log.len().saturating_sub(audit_lines)) {
        let who = e
            .hospital
            .map(|h| format!("hospital {h}"))
            .unwrap_or_else(|| "coordinator".into());
        println!(
            "  {} round {:>3} {:<12} {:<22} {}",
            e.unix_ms, e.round, who, e.event, e.detail
        );
    }
    Ok(())
}
