//! `coordinator status`: the federation, its hospitals, the committed rounds and the audit log,
//! read from the state store; `--json` gives the same as one JSON document for scripts and
//! monitoring (the run's progress as `summary.json` states it).

use anyhow::Context;

use crate::config::FederationConfig;
use crate::provision::Roster;
use crate::server::CoordinatorDir;
use crate::store::Store;

/// The config, the roster and the store (`None` before the coordinator first ran: status
/// never creates state, which belongs to the service's user).
fn open(dir: &CoordinatorDir) -> anyhow::Result<(FederationConfig, Roster, Option<Store>)> {
    let cfg = FederationConfig::from_file(&dir.config())?;
    let roster = Roster::read(&dir.roster())?;
    if !dir.state().exists() {
        return Ok((cfg, roster, None));
    }
    let store = Store::open_existing(&dir.state()).with_context(|| {
        format!(
            "cannot open {} (is the coordinator running? its /metrics answers meanwhile)",
            dir.state().display()
        )
    })?;
    Ok((cfg, roster, Some(store)))
}

const NOT_STARTED: &str = "not started (no state yet: the coordinator has not run)";

/// The status as JSON: federation, phase, hospitals, the run's summary, the newest
/// `audit_lines` audit entries.
pub fn json(dir: &CoordinatorDir, audit_lines: usize) -> anyhow::Result<serde_json::Value> {
    let (cfg, roster, store) = open(dir)?;
    let mut out = serde_json::json!({
        "federation": cfg.federation.name,
        "federation_id": roster.federation.to_string(),
        "hospitals": cfg.federation.hospitals,
        "threshold": cfg.threshold(),
        "min_hospitals": cfg.min_hospitals(),
        "rounds_planned": cfg.rounds(),
        "plaintext": cfg.he.plaintext,
    });
    let Some(store) = store else {
        out["phase"] = NOT_STARTED.into();
        out["state"] = serde_json::json!(dir.state());
        return Ok(out);
    };
    let parties = store.parties()?;
    let hospitals: Vec<serde_json::Value> = roster
        .hospital
        .iter()
        .map(|h| {
            let rec = parties
                .iter()
                .find(|(i, _)| *i == h.index)
                .map(|(_, r)| r.clone())
                .unwrap_or_default();
            serde_json::json!({
                "index": h.index,
                "name": h.name,
                "key_share": rec.public_key_share.is_some(),
                "dealt": rec.dealt,
                "setup_done": rec.setup_done,
            })
        })
        .collect();
    let rounds = store.rounds()?;
    let per_round = crate::progress::per_round(&cfg, &store.metrics()?, &rounds);
    let log = store.audit_log()?;
    let audit = &log[log.len().saturating_sub(audit_lines)..];
    out["phase"] = format!("{:?}", store.phase()?).into();
    out["collective_public_key"] = store.collective_public_key()?.is_some().into();
    out["parties"] = hospitals.into();
    out["summary"] = serde_json::json!(crate::progress::summary(&cfg, &per_round, &rounds, 0.0));
    out["audit"] = serde_json::json!(audit);
    Ok(out)
}

pub fn print(dir: &CoordinatorDir, audit_lines: usize) -> anyhow::Result<()> {
    let (cfg, roster, store) = open(dir)?;
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
    let Some(store) = store else {
        println!("  phase: {NOT_STARTED}, state in {}", dir.state().display());
        return Ok(());
    };
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
