//! What `coordinator simulate` leaves in its output directory and the portal shows: the
//! per-round and per-hospital tables (`metrics_per_round.csv`, `metrics_per_hospital.csv`)
//! and `summary.json`. Simulate writes them and the portal reads them through this one module,
//! so the columns and fields have one owner (the Parquet copies are made from the CSV text).

use serde::{Deserialize, Serialize};

use crate::metrics_file;
use protocol::message::RoundMetrics;

/// The per-round table's file name without extension (`.csv` and `.parquet`).
pub const PER_ROUND: &str = "metrics_per_round";
/// The per-hospital table's file name without extension (`.csv` and `.parquet`).
pub const PER_HOSPITAL: &str = "metrics_per_hospital";
/// The run summary's file name.
pub const SUMMARY: &str = "summary.json";

/// The per-round table's header, in the order of [`RoundRow`]'s fields.
pub const ROUND_HEADER: &str = "round,hospitals,test_acc,test_auc,train_loss,val_loss,train_s,encrypt_s,upload_s,aggregate_s,switch_s,coordinator_switch_s,decrypt_s,round_s,bytes_up,bytes_down,epsilon";

/// The per-hospital table's header: the hospital, then the node's own columns.
pub fn hospital_header() -> String {
    format!("hospital,{}", metrics_file::HEADER)
}

/// One round: means over the hospitals that reported (`NaN` where none did), the coordinator's
/// own timings and the bytes it moved.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoundRow {
    pub round: u64,
    pub hospitals: u64,
    pub test_acc: f64,
    pub test_auc: f64,
    pub train_loss: f64,
    pub val_loss: f64,
    pub train_s: f64,
    pub encrypt_s: f64,
    pub upload_s: f64,
    pub aggregate_s: f64,
    pub switch_s: f64,
    pub coordinator_switch_s: f64,
    pub decrypt_s: f64,
    pub round_s: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// ε after this round at the run's δ (`NaN` without differential privacy).
    pub epsilon: f64,
}

/// Seconds per phase, summed over the run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeSplit {
    pub train: f64,
    pub encrypt: f64,
    pub upload: f64,
    pub aggregate: f64,
    pub switch: f64,
    pub decrypt: f64,
}

/// `summary.json`. `NaN` figures (no hospital evaluated) are written as `null`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    pub name: String,
    pub rounds: u64,
    pub hospitals: u32,
    pub threshold: u32,
    pub plaintext: bool,
    pub final_test_auc: Option<f64>,
    pub final_test_acc: Option<f64>,
    pub wall_s: f64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub mean_round_s: f64,
    pub time_split_s: TimeSplit,
    /// The run's differential-privacy guarantee (ε, δ) after its last round; `null` without
    /// `[privacy]` (older summaries lack the fields).
    #[serde(default)]
    pub epsilon: Option<f64>,
    #[serde(default)]
    pub delta: Option<f64>,
    /// AUC of a loss-threshold membership-inference attack on the final model (training images
    /// against unseen test images, mean over the hospitals): 0.5 is chance.
    #[serde(default)]
    pub mia_auc: Option<f64>,
}

/// Why a run's file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RunReportError {
    #[error("the header is not simulate's ({0})")]
    Header(String),
    #[error("line {line}: {what}")]
    Row { line: usize, what: String },
}

/// The per-round table as CSV text.
pub fn round_csv(rows: &[RoundRow]) -> String {
    let mut s = format!("{ROUND_HEADER}\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.round,
            r.hospitals,
            r.test_acc,
            r.test_auc,
            r.train_loss,
            r.val_loss,
            r.train_s,
            r.encrypt_s,
            r.upload_s,
            r.aggregate_s,
            r.switch_s,
            r.coordinator_switch_s,
            r.decrypt_s,
            r.round_s,
            r.bytes_up,
            r.bytes_down,
            r.epsilon
        ));
    }
    s
}

/// The per-hospital table as CSV text: each hospital's report of each round.
pub fn hospital_csv(rows: &[(u32, RoundMetrics)]) -> String {
    let mut s = hospital_header();
    s.push('\n');
    for (h, m) in rows {
        s.push_str(&format!("{h},{}\n", metrics_file::row(m)));
    }
    s
}

/// Non-empty lines after a header that must be `want`, numbered from 1.
fn body<'a>(
    text: &'a str,
    want: &str,
) -> Result<impl Iterator<Item = (usize, &'a str)>, RunReportError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| (i + 1, l));
    match lines.next() {
        Some((_, h)) if h.trim() == want => Ok(lines),
        _ => Err(RunReportError::Header(want.to_string())),
    }
}

/// Every row of a per-round table, checked field by field; a table written before the
/// `epsilon` column existed reads with `NaN` there.
pub fn parse_rounds(text: &str) -> Result<Vec<RoundRow>, RunReportError> {
    let older = ROUND_HEADER
        .strip_suffix(",epsilon")
        .unwrap_or(ROUND_HEADER);
    let (rows, columns) = match body(text, ROUND_HEADER) {
        Ok(rows) => (rows, 17),
        Err(e) => match body(text, older) {
            Ok(rows) => (rows, 16),
            Err(_) => return Err(e),
        },
    };
    rows.map(|(line, l)| parse_round(l, columns).map_err(|what| RunReportError::Row { line, what }))
        .collect()
}

fn parse_round(line: &str, columns: usize) -> Result<RoundRow, String> {
    let mut f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != columns {
        return Err(format!("{} fields for {columns} columns", f.len()));
    }
    f.resize(17, "NaN");
    let int = |i: usize| {
        f[i].parse::<u64>()
            .map_err(|e| format!("column {}: {e}", i + 1))
    };
    let real = |i: usize| {
        f[i].parse::<f64>()
            .map_err(|e| format!("column {}: {e}", i + 1))
    };
    Ok(RoundRow {
        round: int(0)?,
        hospitals: int(1)?,
        test_acc: real(2)?,
        test_auc: real(3)?,
        train_loss: real(4)?,
        val_loss: real(5)?,
        train_s: real(6)?,
        encrypt_s: real(7)?,
        upload_s: real(8)?,
        aggregate_s: real(9)?,
        switch_s: real(10)?,
        coordinator_switch_s: real(11)?,
        decrypt_s: real(12)?,
        round_s: real(13)?,
        bytes_up: int(14)?,
        bytes_down: int(15)?,
        epsilon: real(16)?,
    })
}

/// Every row of a per-hospital table, checked field by field.
pub fn parse_hospitals(text: &str) -> Result<Vec<(u32, RoundMetrics)>, RunReportError> {
    body(text, &hospital_header())?
        .map(|(line, l)| {
            let row = || -> Result<(u32, RoundMetrics), String> {
                let (h, rest) = l.split_once(',').ok_or("no hospital column")?;
                let h = h
                    .trim()
                    .parse::<u32>()
                    .map_err(|e| format!("column 1: {e}"))?;
                Ok((h, metrics_file::parse_row(rest)?))
            };
            row().map_err(|what| RunReportError::Row { line, what })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_file::testing::metrics;

    fn round(r: u64) -> RoundRow {
        RoundRow {
            round: r,
            hospitals: 3,
            test_acc: f64::NAN,
            test_auc: 0.875,
            bytes_up: 9_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn what_simulate_writes_reads_back() {
        let rows = parse_rounds(&round_csv(&[round(1), round(2)])).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[1].round, rows[1].hospitals), (2, 3));
        assert_eq!((rows[0].test_auc, rows[0].bytes_up), (0.875, 9_000_000));
        assert!(rows[0].test_acc.is_nan());
        // a table from before the epsilon column reads, with NaN there; a short row does not
        let old = round_csv(&[round(1)])
            .lines()
            .map(|l| l.rsplit_once(',').unwrap().0.to_string() + "\n")
            .collect::<String>();
        let rows = parse_rounds(&old).unwrap();
        assert!(rows[0].epsilon.is_nan() && rows[0].test_auc == 0.875);
        let short = format!("{ROUND_HEADER}\n{}", old.lines().nth(1).unwrap());
        assert!(matches!(
            parse_rounds(&short),
            Err(RunReportError::Row { line: 2, .. })
        ));
        let h = parse_hospitals(&hospital_csv(&[(2, metrics(1)), (5, metrics(1))])).unwrap();
        assert_eq!((h[0].0, h[1].0), (2, 5));
        assert_eq!(h[1].1.samples, 546);
        let s = RunSummary {
            name: "x".into(),
            final_test_auc: None,
            ..Default::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<RunSummary>(&json).unwrap(), s);
    }

    #[test]
    fn other_tables_and_bad_rows_are_refused_with_the_line() {
        assert!(matches!(
            parse_rounds("round,acc\n1,0.5\n"),
            Err(RunReportError::Header(_))
        ));
        assert!(matches!(
            parse_hospitals(&round_csv(&[round(1)])),
            Err(RunReportError::Header(_))
        ));
        let bad = format!("{}1,x,{}\n", round_csv(&[round(1)]), "0,".repeat(13) + "0");
        assert!(matches!(
            parse_rounds(&bad),
            Err(RunReportError::Row { line: 3, .. })
        ));
        let bad = format!(
            "{}x,{}\n",
            hospital_csv(&[]),
            metrics_file::row(&metrics(1))
        );
        assert!(matches!(
            parse_hospitals(&bad),
            Err(RunReportError::Row { line: 2, .. })
        ));
    }
}
