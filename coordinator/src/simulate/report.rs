//! What a simulation leaves behind: per-hospital and per-round tables (CSV and Parquet), PNG
//! plots (AUC/ACC/loss per round; bytes on the wire per round; time split), and summary.json.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;
use polars::prelude::*;
use protocol::message::RoundMetrics;

use crate::config::FederationConfig;
use crate::server::CoordinatorDir;
use crate::store::{RoundRecord, Store};

/// Per-round means over the hospitals that reported.
#[derive(Debug, Clone, Default)]
struct RoundRow {
    round: u64,
    hospitals: usize,
    test_acc: f64,
    test_auc: f64,
    val_loss: f64,
    train_loss: f64,
    train_s: f64,
    encrypt_s: f64,
    upload_s: f64,
    switch_s: f64,
    decrypt_s: f64,
    aggregate_s: f64,
    coordinator_switch_s: f64,
    round_s: f64,
    bytes_up: u64,
    bytes_down: u64,
}

fn mean(v: &[&RoundMetrics], f: impl Fn(&RoundMetrics) -> f32) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().map(|m| f(m) as f64).sum::<f64>() / v.len() as f64
    }
}

fn rows(metrics: &[(u32, RoundMetrics)], rounds: &[RoundRecord]) -> Vec<RoundRow> {
    rounds
        .iter()
        .map(|r| {
            let ms: Vec<&RoundMetrics> = metrics
                .iter()
                .filter(|(_, m)| m.round == r.round)
                .map(|(_, m)| m)
                .collect();
            RoundRow {
                round: r.round,
                hospitals: ms.len(),
                test_acc: mean(&ms, |m| m.test_acc),
                test_auc: mean(&ms, |m| m.test_auc),
                val_loss: mean(&ms, |m| m.val_loss),
                train_loss: mean(&ms, |m| m.train_loss),
                train_s: mean(&ms, |m| m.train_s),
                encrypt_s: mean(&ms, |m| m.encrypt_s),
                upload_s: mean(&ms, |m| m.upload_s),
                switch_s: mean(&ms, |m| m.switch_s),
                decrypt_s: mean(&ms, |m| m.decrypt_s),
                aggregate_s: r.aggregate_s,
                coordinator_switch_s: r.switch_s,
                round_s: r.committed_unix_ms.saturating_sub(r.started_unix_ms) as f64 / 1e3,
                bytes_up: r.bytes_up,
                bytes_down: r.bytes_down,
            }
        })
        .collect()
}

fn write_table(df: &mut DataFrame, dir: &Path, name: &str) -> anyhow::Result<()> {
    let csv = dir.join(format!("{name}.csv"));
    let mut f =
        std::fs::File::create(&csv).with_context(|| format!("cannot write {}", csv.display()))?;
    CsvWriter::new(&mut f)
        .finish(df)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", csv.display()))?;
    let pq = dir.join(format!("{name}.parquet"));
    let f = std::fs::File::create(&pq).with_context(|| format!("cannot write {}", pq.display()))?;
    ParquetWriter::new(f)
        .finish(df)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", pq.display()))?;
    Ok(())
}

pub fn write(
    cfg: &FederationConfig,
    coord: &CoordinatorDir,
    out: &Path,
    wall_s: f64,
) -> anyhow::Result<()> {
    let store = Store::open_existing(&coord.state())?;
    let metrics = store.metrics()?;
    let rounds = store.rounds()?;
    let per_round = rows(&metrics, &rounds);

    let mut hospitals_df = DataFrame::new_infer_height(vec![
        Column::new(
            "round".into(),
            metrics.iter().map(|(_, m)| m.round).collect::<Vec<_>>(),
        ),
        Column::new(
            "hospital".into(),
            metrics.iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        ),
        Column::new(
            "samples".into(),
            metrics.iter().map(|(_, m)| m.samples).collect::<Vec<_>>(),
        ),
        Column::new(
            "train_loss".into(),
            metrics
                .iter()
                .map(|(_, m)| m.train_loss)
                .collect::<Vec<_>>(),
        ),
        Column::new(
            "val_loss".into(),
            metrics.iter().map(|(_, m)| m.val_loss).collect::<Vec<_>>(),
        ),
        Column::new(
            "val_acc".into(),
            metrics.iter().map(|(_, m)| m.val_acc).collect::<Vec<_>>(),
        ),
        Column::new(
            "val_auc".into(),
            metrics.iter().map(|(_, m)| m.val_auc).collect::<Vec<_>>(),
        ),
        Column::new(
            "test_acc".into(),
            metrics.iter().map(|(_, m)| m.test_acc).collect::<Vec<_>>(),
        ),
        Column::new(
            "test_auc".into(),
            metrics.iter().map(|(_, m)| m.test_auc).collect::<Vec<_>>(),
        ),
        Column::new(
            "train_s".into(),
            metrics.iter().map(|(_, m)| m.train_s).collect::<Vec<_>>(),
        ),
        Column::new(
            "encrypt_s".into(),
            metrics.iter().map(|(_, m)| m.encrypt_s).collect::<Vec<_>>(),
        ),
        Column::new(
            "upload_s".into(),
            metrics.iter().map(|(_, m)| m.upload_s).collect::<Vec<_>>(),
        ),
        Column::new(
            "switch_s".into(),
            metrics.iter().map(|(_, m)| m.switch_s).collect::<Vec<_>>(),
        ),
        Column::new(
            "decrypt_s".into(),
            metrics.iter().map(|(_, m)| m.decrypt_s).collect::<Vec<_>>(),
        ),
        Column::new(
            "bytes_up".into(),
            metrics.iter().map(|(_, m)| m.bytes_up).collect::<Vec<_>>(),
        ),
        Column::new(
            "bytes_down".into(),
            metrics
                .iter()
                .map(|(_, m)| m.bytes_down)
                .collect::<Vec<_>>(),
        ),
    ])?;
    write_table(&mut hospitals_df, out, "metrics_per_hospital")?;
    let col = |f: fn(&RoundRow) -> f64| per_round.iter().map(f).collect::<Vec<_>>();
    let mut rounds_df = DataFrame::new_infer_height(vec![
        Column::new(
            "round".into(),
            per_round.iter().map(|r| r.round).collect::<Vec<_>>(),
        ),
        Column::new(
            "hospitals".into(),
            per_round
                .iter()
                .map(|r| r.hospitals as u32)
                .collect::<Vec<_>>(),
        ),
        Column::new("test_acc".into(), col(|r| r.test_acc)),
        Column::new("test_auc".into(), col(|r| r.test_auc)),
        Column::new("train_loss".into(), col(|r| r.train_loss)),
        Column::new("val_loss".into(), col(|r| r.val_loss)),
        Column::new("train_s".into(), col(|r| r.train_s)),
        Column::new("encrypt_s".into(), col(|r| r.encrypt_s)),
        Column::new("upload_s".into(), col(|r| r.upload_s)),
        Column::new("aggregate_s".into(), col(|r| r.aggregate_s)),
        Column::new("switch_s".into(), col(|r| r.switch_s)),
        Column::new(
            "coordinator_switch_s".into(),
            col(|r| r.coordinator_switch_s),
        ),
        Column::new("decrypt_s".into(), col(|r| r.decrypt_s)),
        Column::new("round_s".into(), col(|r| r.round_s)),
        Column::new(
            "bytes_up".into(),
            per_round.iter().map(|r| r.bytes_up).collect::<Vec<_>>(),
        ),
        Column::new(
            "bytes_down".into(),
            per_round.iter().map(|r| r.bytes_down).collect::<Vec<_>>(),
        ),
    ])?;
    write_table(&mut rounds_df, out, "metrics_per_round")?;
    plots(out, &per_round, cfg.he.plaintext)?;

    let last = per_round.last().cloned().unwrap_or_default();
    let summary = serde_json::json!({
        "name": cfg.federation.name,
        "rounds": rounds.len(),
        "hospitals": cfg.federation.hospitals,
        "threshold": cfg.threshold(),
        "plaintext": cfg.he.plaintext,
        "final_test_auc": last.test_auc,
        "final_test_acc": last.test_acc,
        "wall_s": wall_s,
        "bytes_up": rounds.iter().map(|r| r.bytes_up).sum::<u64>(),
        "bytes_down": rounds.iter().map(|r| r.bytes_down).sum::<u64>(),
        "mean_round_s": if per_round.is_empty() { 0.0 } else { per_round.iter().map(|r| r.round_s).sum::<f64>() / per_round.len() as f64 },
        "time_split_s": {
            "train": per_round.iter().map(|r| r.train_s).sum::<f64>(),
            "encrypt": per_round.iter().map(|r| r.encrypt_s).sum::<f64>(),
            "upload": per_round.iter().map(|r| r.upload_s).sum::<f64>(),
            "aggregate": per_round.iter().map(|r| r.aggregate_s).sum::<f64>(),
            "switch": per_round.iter().map(|r| r.switch_s).sum::<f64>(),
            "decrypt": per_round.iter().map(|r| r.decrypt_s).sum::<f64>(),
        },
    });
    let path = out.join("summary.json");
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "final test AUC {:.4}, accuracy {:.4} after {} rounds; {:.1} MB up, {:.1} MB down",
        last.test_auc,
        last.test_acc,
        rounds.len(),
        rounds.iter().map(|r| r.bytes_up).sum::<u64>() as f64 / 1e6,
        rounds.iter().map(|r| r.bytes_down).sum::<u64>() as f64 / 1e6
    );
    Ok(())
}

/// Loads a TTF font for labels; plots stay readable without one, only unlabelled.
fn font_ready() -> bool {
    static READY: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *READY.get_or_init(|| {
        let candidates = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
        ];
        for c in candidates {
            if let Ok(bytes) = std::fs::read(c) {
                let leaked: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, leaked).is_ok() {
                    return true;
                }
            }
        }
        tracing::warn!("no TrueType font found: plots are written without labels");
        false
    })
}

type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

fn line_plot(path: &Path, title: &str, y_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let labels = font_ready();
    let root = BitMapBackend::new(path, (900, 540)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .collect();
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .collect();
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (y0, y1) = (
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    if !(x0.is_finite() && y0.is_finite()) {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    let mut builder = ChartBuilder::on(&root);
    builder
        .margin(20)
        .x_label_area_size(if labels { 40 } else { 5 })
        .y_label_area_size(if labels { 70 } else { 5 });
    if labels {
        builder.caption(title, ("sans-serif", 24));
    }
    let mut chart = builder
        .build_cartesian_2d(x0..x1.max(x0 + 1.0), (y0 - pad)..(y1 + pad))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut mesh = chart.configure_mesh();
    if labels {
        mesh.x_desc("round").y_desc(y_label);
    } else {
        mesh.disable_x_mesh()
            .disable_y_mesh()
            .x_labels(0)
            .y_labels(0);
    }
    mesh.draw().map_err(|e| anyhow::anyhow!("{e}"))?;
    for (name, pts, color) in series {
        let pts: Vec<(f64, f64)> = pts.iter().copied().filter(|p| p.1.is_finite()).collect();
        let drawn = chart
            .draw_series(LineSeries::new(pts, color.stroke_width(3)))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if labels {
            let c = *color;
            drawn.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(3))
            });
        }
    }
    if labels {
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present()
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))?;
    Ok(())
}

fn plots(out: &Path, rows: &[RoundRow], plaintext: bool) -> anyhow::Result<()> {
    let mode = if plaintext { "plaintext" } else { "encrypted" };
    let pts = |f: fn(&RoundRow) -> f64| {
        rows.iter()
            .map(|r| (r.round as f64, f(r)))
            .collect::<Vec<_>>()
    };
    line_plot(
        &out.join("accuracy.png"),
        &format!("Global model on the test split ({mode})"),
        "score",
        &[
            ("test AUC", pts(|r| r.test_auc), BLUE),
            ("test accuracy", pts(|r| r.test_acc), RED),
        ],
    )?;
    line_plot(
        &out.join("loss.png"),
        &format!("Loss per round ({mode})"),
        "cross-entropy",
        &[
            ("train loss", pts(|r| r.train_loss), MAGENTA),
            ("validation loss", pts(|r| r.val_loss), GREEN),
        ],
    )?;
    line_plot(
        &out.join("bytes.png"),
        "Bytes on the wire per round",
        "MB",
        &[
            (
                "up (to the coordinator)",
                pts(|r| r.bytes_up as f64 / 1e6),
                BLUE,
            ),
            ("down", pts(|r| r.bytes_down as f64 / 1e6), RED),
        ],
    )?;
    line_plot(
        &out.join("time.png"),
        "Time per round, split (mean over hospitals)",
        "seconds",
        &[
            ("train", pts(|r| r.train_s), BLUE),
            ("encrypt", pts(|r| r.encrypt_s), RED),
            ("upload", pts(|r| r.upload_s), GREEN),
            ("aggregate", pts(|r| r.aggregate_s), MAGENTA),
            ("re-encrypt (PCKS)", pts(|r| r.coordinator_switch_s), CYAN),
            ("whole round", pts(|r| r.round_s), BLACK),
        ],
    )?;
    Ok(())
}
