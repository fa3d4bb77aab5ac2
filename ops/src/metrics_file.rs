//! A hospital node's record of its rounds, `metrics.csv` in its output directory: one row per
//! round with the figures it reports to the coordinator ([`RoundMetrics`]). The node writes it
//! and the portal reads it through this one module, so the columns have one owner.

use std::path::Path;

use protocol::message::RoundMetrics;

/// The header, in the order of [`RoundMetrics`]'s fields.
pub const HEADER: &str = "round,train_loss,val_loss,val_acc,val_auc,test_acc,test_auc,samples,train_s,encrypt_s,upload_s,switch_s,decrypt_s,bytes_up,bytes_down";

/// Why a metrics file cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MetricsFileError {
    #[error("the header is not the node's ({HEADER})")]
    Header,
    #[error("line {line}: {what}")]
    Row { line: usize, what: String },
}

/// One row (no newline).
pub fn row(m: &RoundMetrics) -> String {
    format!(
        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
        m.round,
        m.train_loss,
        m.val_loss,
        m.val_acc,
        m.val_auc,
        m.test_acc,
        m.test_auc,
        m.samples,
        m.train_s,
        m.encrypt_s,
        m.upload_s,
        m.switch_s,
        m.decrypt_s,
        m.bytes_up,
        m.bytes_down
    )
}

/// Appends `m` to the file at `path`, writing the header first when the file is new.
pub fn append(path: &Path, m: &RoundMetrics) -> std::io::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    if new {
        writeln!(f, "{HEADER}")?;
    }
    writeln!(f, "{}", row(m))
}

/// Every row of a metrics file's text, checked field by field (`NaN` where a figure was not
/// measured, as the node writes it).
pub fn parse(text: &str) -> Result<Vec<RoundMetrics>, MetricsFileError> {
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    match lines.next() {
        Some((_, h)) if h.trim() == HEADER => {}
        _ => return Err(MetricsFileError::Header),
    }
    lines
        .map(|(i, l)| parse_row(l).map_err(|what| MetricsFileError::Row { line: i + 1, what }))
        .collect()
}

/// One row's fields (no newline), as [`row`] writes them.
pub(crate) fn parse_row(line: &str) -> Result<RoundMetrics, String> {
    let f: Vec<&str> = line.split(',').map(str::trim).collect();
    if f.len() != 15 {
        return Err(format!("{} fields for 15 columns", f.len()));
    }
    let int = |i: usize| {
        f[i].parse::<u64>()
            .map_err(|e| format!("column {}: {e}", i + 1))
    };
    let real = |i: usize| {
        f[i].parse::<f32>()
            .map_err(|e| format!("column {}: {e}", i + 1))
    };
    Ok(RoundMetrics {
        round: int(0)?,
        train_loss: real(1)?,
        val_loss: real(2)?,
        val_acc: real(3)?,
        val_auc: real(4)?,
        test_acc: real(5)?,
        test_auc: real(6)?,
        samples: int(7)?,
        train_s: real(8)?,
        encrypt_s: real(9)?,
        upload_s: real(10)?,
        switch_s: real(11)?,
        decrypt_s: real(12)?,
        bytes_up: int(13)?,
        bytes_down: int(14)?,
    })
}

/// A node's report of a round, for the tests of the files that hold it.
#[cfg(test)]
pub(crate) mod testing {
    use protocol::message::RoundMetrics;

    pub(crate) fn metrics(round: u64) -> RoundMetrics {
        RoundMetrics {
            round,
            train_loss: 0.5,
            val_loss: 0.25,
            val_acc: 0.75,
            val_auc: 0.875,
            test_acc: f32::NAN,
            test_auc: f32::NAN,
            samples: 546,
            train_s: 1.5,
            encrypt_s: 0.125,
            upload_s: 0.0625,
            switch_s: 0.25,
            decrypt_s: 0.5,
            bytes_up: 1_000_000,
            bytes_down: 2_000_000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics_file::testing::metrics;

    #[test]
    fn what_the_node_appends_reads_back() {
        let dir = std::env::temp_dir().join(format!("heal-metrics-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("metrics.csv");
        let _ = std::fs::remove_file(&path);
        append(&path, &metrics(1)).unwrap();
        append(&path, &metrics(2)).unwrap();
        let rows = parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].round, 2);
        assert_eq!((rows[0].val_auc, rows[0].bytes_down), (0.875, 2_000_000));
        assert!(rows[0].test_auc.is_nan());
    }

    #[test]
    fn other_files_and_bad_rows_are_refused_with_the_line() {
        assert_eq!(parse("round,acc\n1,0.5\n"), Err(MetricsFileError::Header));
        assert_eq!(parse(""), Err(MetricsFileError::Header));
        let short = format!("{HEADER}\n{}\n1,2,3\n", row(&metrics(1)));
        assert!(matches!(
            parse(&short),
            Err(MetricsFileError::Row { line: 3, .. })
        ));
        let word = format!(
            "{HEADER}\n{}\n",
            row(&metrics(1)).replacen("546", "many", 1)
        );
        assert!(matches!(
            parse(&word),
            Err(MetricsFileError::Row { line: 2, .. })
        ));
    }
}
