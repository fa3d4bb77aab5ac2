//! What a simulation leaves behind: per-hospital and per-round tables (CSV and Parquet), PNG
//! plots (AUC/ACC/loss per round; bytes on the wire per round; time split), and summary.json.
//! The tables' columns and the summary's fields are `ops::run_report`'s, the module the
//! portal reads them with.

use std::path::Path;

use anyhow::Context;
use ops::run_report::{self, RoundRow};
use plotters::prelude::*;
use polars::prelude::*;

use crate::config::FederationConfig;
use crate::server::CoordinatorDir;
use crate::store::Store;

/// `name.csv` with `csv` (protocol's text) and `name.parquet` with the same table, every column
/// read as written: integers as integers, figures as floats (`NaN` kept).
fn write_table(dir: &Path, name: &str, csv: &str) -> anyhow::Result<()> {
    let path = dir.join(format!("{name}.csv"));
    std::fs::write(&path, csv).with_context(|| format!("cannot write {}", path.display()))?;
    // the schema from the header, not inferred: a figure written without a decimal point (a
    // diverging loss of 3.7e28 prints as 369…000) is still a float, and never too big an integer
    let header = csv.lines().next().unwrap_or_default();
    let schema: Schema = header
        .split(',')
        .map(|c| {
            let dtype = match c {
                "round" | "hospitals" | "hospital" | "samples" | "bytes_up" | "bytes_down" => {
                    DataType::Int64
                }
                _ => DataType::Float64,
            };
            Field::new(c.into(), dtype)
        })
        .collect();
    let mut df = CsvReadOptions::default()
        .with_has_header(true)
        .with_schema(Some(Arc::new(schema)))
        .into_reader_with_file_handle(std::io::Cursor::new(csv.as_bytes()))
        .finish()
        .map_err(|e| anyhow::anyhow!("reading back {}: {e}", path.display()))?;
    let pq = dir.join(format!("{name}.parquet"));
    let f = std::fs::File::create(&pq).with_context(|| format!("cannot write {}", pq.display()))?;
    ParquetWriter::new(f)
        .finish(&mut df)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", pq.display()))?;
    Ok(())
}

/// The mean over the hospitals of their membership-inference AUC on the final model (each
/// node writes `mia.json` in its output directory when the run ends).
fn membership_auc(out: &Path, hospitals: u32) -> Option<f64> {
    let aucs: Vec<f64> = (1..=hospitals)
        .filter_map(|h| {
            let path = out
                .join("hospitals")
                .join(format!("hospital-{h}"))
                .join("mia.json");
            let doc: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
            doc["mia_auc"].as_f64()
        })
        .collect();
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
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
    let per_round = crate::progress::per_round(cfg, &metrics, &rounds);
    write_table(
        out,
        run_report::PER_HOSPITAL,
        &run_report::hospital_csv(&metrics),
    )?;
    write_table(
        out,
        run_report::PER_ROUND,
        &run_report::round_csv(&per_round),
    )?;
    plots(out, &per_round, cfg.he.plaintext)?;

    let mut summary = crate::progress::summary(cfg, &per_round, &rounds, wall_s);
    summary.mia_auc = membership_auc(out, cfg.federation.hospitals);
    let last = per_round.last().cloned().unwrap_or_default();
    let path = out.join(run_report::SUMMARY);
    std::fs::write(&path, serde_json::to_string_pretty(&summary)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "final test AUC {:.4}, accuracy {:.4} after {} rounds; {:.1} MB up, {:.1} MB down",
        last.test_auc,
        last.test_acc,
        rounds.len(),
        summary.bytes_up as f64 / 1e6,
        summary.bytes_down as f64 / 1e6
    );
    if let Some(e) = summary.epsilon {
        println!(
            "differential privacy: ε = {e:.3} at δ = {:e}",
            cfg.privacy.delta
        );
    }
    if let Some(a) = summary.mia_auc {
        println!("membership-inference AUC (loss threshold, mean over hospitals): {a:.4}");
    }
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

const PLOT_SIZE: (u32, u32) = (900, 540);

/// Draws into an RGB buffer and writes it as PNG with `image` (plotters' own encoder would
/// build a second, older `image` crate).
fn line_plot(path: &Path, title: &str, y_label: &str, series: &[Series]) -> anyhow::Result<()> {
    let (w, h) = PLOT_SIZE;
    let mut buf = vec![0u8; (w * h * 3) as usize];
    if !draw_lines(&mut buf, title, y_label, series)? {
        return Ok(());
    }
    image::save_buffer(path, &buf, w, h, image::ExtendedColorType::Rgb8)
        .map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

/// Draws the plot; false when there is nothing to draw.
fn draw_lines(
    buf: &mut [u8],
    title: &str,
    y_label: &str,
    series: &[Series],
) -> anyhow::Result<bool> {
    let labels = font_ready();
    let root = BitMapBackend::with_buffer(buf, PLOT_SIZE).into_drawing_area();
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
        return Ok(false);
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
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(true)
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
            ("re-encrypt", pts(|r| r.coordinator_switch_s), CYAN),
            ("whole round", pts(|r| r.round_s), BLACK),
        ],
    )?;
    if rows.iter().any(|r| r.epsilon.is_finite()) {
        line_plot(
            &out.join("privacy.png"),
            "Differential privacy spent: ε after each round",
            "ε",
            &[("ε", pts(|r| r.epsilon), RED)],
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_are_written_as_csv_and_parquet_with_nan_kept() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            RoundRow {
                round: 1,
                hospitals: 3,
                test_acc: f64::NAN,
                test_auc: f64::NAN,
                bytes_up: 7,
                ..Default::default()
            },
            RoundRow {
                round: 2,
                hospitals: 2,
                test_acc: 0.75,
                test_auc: 0.875,
                ..Default::default()
            },
        ];
        write_table(dir.path(), "t", &run_report::round_csv(&rows)).unwrap();
        let csv = std::fs::read_to_string(dir.path().join("t.csv")).unwrap();
        let back = run_report::parse_rounds(&csv).unwrap();
        assert_eq!(back[1], rows[1]);
        assert!(back[0].test_auc.is_nan());
        let f = std::fs::File::open(dir.path().join("t.parquet")).unwrap();
        let df = ParquetReader::new(f).finish().unwrap();
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names.join(","), run_report::ROUND_HEADER);
        let auc = df.column("test_auc").unwrap().f64().unwrap();
        assert!(auc.get(0).unwrap().is_nan());
        assert_eq!(auc.get(1), Some(0.875));
        let up = df.column("bytes_up").unwrap().i64().unwrap();
        assert_eq!(up.get(0), Some(7));
    }

    /// A loss of 3.7e28 prints without a decimal point; it is read back as the float it is
    /// (an inferred schema took it for an integer too big for i64 and lost the run's tables).
    #[test]
    fn a_huge_loss_is_still_a_float() {
        let dir = tempfile::tempdir().unwrap();
        let rows = [RoundRow {
            round: 1,
            hospitals: 3,
            train_loss: 3.6907528e28,
            val_loss: 1.0,
            ..Default::default()
        }];
        let csv = run_report::round_csv(&rows);
        assert!(csv.contains("36907528"), "{csv}");
        write_table(dir.path(), "t", &csv).unwrap();
        let f = std::fs::File::open(dir.path().join("t.parquet")).unwrap();
        let df = ParquetReader::new(f).finish().unwrap();
        let loss = df.column("train_loss").unwrap().f64().unwrap();
        assert!((loss.get(0).unwrap() / 3.6907528e28 - 1.0).abs() < 1e-6);
        let val = df.column("val_loss").unwrap().f64().unwrap();
        assert_eq!(val.get(0), Some(1.0));
    }
}
