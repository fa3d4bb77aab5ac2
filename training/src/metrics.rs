//! Classification metrics from predicted probabilities: accuracy, one-vs-rest AUC per class and
//! its macro average, per-class precision/recall/F1, the confusion matrix; and their tables
//! (CSV and Parquet via polars).

use std::path::Path;

use polars::prelude::*;

use crate::error::TrainError;

/// Metrics of one class.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClassMetrics {
    /// Class index.
    pub class: usize,
    /// Class name.
    pub name: String,
    /// Images of this class.
    pub support: usize,
    /// TP / (TP + FP); 0 when nothing was predicted as this class.
    pub precision: f64,
    /// TP / (TP + FN); 0 without images of the class.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// One-vs-rest ROC AUC of this class's probability; `None` when the class is absent or is
    /// everything.
    pub auc: Option<f64>,
}

/// Evaluation of a classifier on a labelled set.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub n: usize,
    /// Share of arg-max predictions equal to the label.
    pub accuracy: f64,
    /// Mean of the defined one-vs-rest AUCs (for two classes, the usual binary AUC).
    pub macro_auc: f64,
    /// Mean cross-entropy (natural log) of the labels under the predicted probabilities.
    pub loss: f64,
    /// Per class.
    pub per_class: Vec<ClassMetrics>,
    /// `confusion[true][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

/// ROC AUC of `scores` for the positives (Mann–Whitney U with tied scores counted ½).
/// `None` when there are no positives or no negatives.
pub fn binary_auc(scores: &[f64], positive: &[bool]) -> Option<f64> {
    let n_pos = positive.iter().filter(|&&p| p).count();
    let n_neg = positive.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    // Sum of (average) ranks of the positives, 1-based.
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            if positive[k] {
                rank_sum += avg_rank;
            }
        }
        i = j + 1;
    }
    let u = rank_sum - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// Metrics from probabilities `probs` (`n × classes`, row-major) and `labels`.
pub fn evaluate_probs(
    probs: &[f32],
    labels: &[u32],
    class_names: &[String],
) -> Result<EvalReport, TrainError> {
    let k = class_names.len();
    let n = labels.len();
    if k < 2 || probs.len() != n * k {
        return Err(TrainError::invalid(
            "evaluation",
            format!("{} probabilities for {n} labels × {k} classes", probs.len()),
        ));
    }
    if let Some((i, &l)) = labels.iter().enumerate().find(|(_, l)| **l as usize >= k) {
        return Err(TrainError::invalid(
            "evaluation",
            format!("label {l} at row {i} is out of range for {k} classes"),
        ));
    }
    let mut confusion = vec![vec![0u64; k]; k];
    let mut correct = 0usize;
    let mut loss = 0.0f64;
    for (i, &l) in labels.iter().enumerate() {
        let row = &probs[i * k..(i + 1) * k];
        let pred = row
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1).then(b.0.cmp(&a.0)))
            .map(|(j, _)| j)
            .unwrap_or(0);
        confusion[l as usize][pred] += 1;
        if pred == l as usize {
            correct += 1;
        }
        loss -= (row[l as usize] as f64).max(1e-12).ln();
    }
    let mut per_class = Vec::with_capacity(k);
    for c in 0..k {
        let tp = confusion[c][c] as f64;
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|r| r[c]).sum();
        let precision = if predicted > 0 {
            tp / predicted as f64
        } else {
            0.0
        };
        let recall = if support > 0 {
            tp / support as f64
        } else {
            0.0
        };
        let f1 = if precision + recall > 0.0 {
            2.0 * precision * recall / (precision + recall)
        } else {
            0.0
        };
        let scores: Vec<f64> = (0..n).map(|i| probs[i * k + c] as f64).collect();
        let pos: Vec<bool> = labels.iter().map(|&l| l as usize == c).collect();
        per_class.push(ClassMetrics {
            class: c,
            name: class_names[c].clone(),
            support: support as usize,
            precision,
            recall,
            f1,
            auc: binary_auc(&scores, &pos),
        });
    }
    let aucs: Vec<f64> = per_class.iter().filter_map(|c| c.auc).collect();
    let macro_auc = if aucs.is_empty() {
        f64::NAN
    } else {
        aucs.iter().sum::<f64>() / aucs.len() as f64
    };
    Ok(EvalReport {
        n,
        accuracy: if n > 0 {
            correct as f64 / n as f64
        } else {
            0.0
        },
        macro_auc,
        loss: if n > 0 { loss / n as f64 } else { 0.0 },
        per_class,
        confusion,
    })
}

impl EvalReport {
    /// `class, name, support, precision, recall, f1, auc` — one row per class.
    pub fn per_class_table(&self) -> Result<DataFrame, TrainError> {
        let pc = &self.per_class;
        DataFrame::new_infer_height(vec![
            Column::new(
                "class".into(),
                pc.iter().map(|c| c.class as u32).collect::<Vec<_>>(),
            ),
            Column::new(
                "name".into(),
                pc.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
            ),
            Column::new(
                "support".into(),
                pc.iter().map(|c| c.support as u64).collect::<Vec<_>>(),
            ),
            Column::new(
                "precision".into(),
                pc.iter().map(|c| c.precision).collect::<Vec<_>>(),
            ),
            Column::new(
                "recall".into(),
                pc.iter().map(|c| c.recall).collect::<Vec<_>>(),
            ),
            Column::new("f1".into(), pc.iter().map(|c| c.f1).collect::<Vec<_>>()),
            Column::new("auc".into(), pc.iter().map(|c| c.auc).collect::<Vec<_>>()),
        ])
        .map_err(|source| TrainError::Table {
            context: "per-class table".into(),
            source,
        })
    }

    /// Confusion matrix: a `true_class` column (names), then one count column per predicted
    /// class (`pred_<index>`).
    pub fn confusion_table(&self) -> Result<DataFrame, TrainError> {
        let k = self.confusion.len();
        let mut cols = vec![Column::new(
            "true_class".into(),
            self.per_class
                .iter()
                .map(|c| c.name.clone())
                .collect::<Vec<_>>(),
        )];
        for p in 0..k {
            cols.push(Column::new(
                format!("pred_{p}").into(),
                self.confusion.iter().map(|r| r[p]).collect::<Vec<_>>(),
            ));
        }
        DataFrame::new_infer_height(cols).map_err(|source| TrainError::Table {
            context: "confusion table".into(),
            source,
        })
    }

    /// Writes `{prefix}_per_class.{csv,parquet}` and `{prefix}_confusion.{csv,parquet}` in `dir`.
    pub fn write_tables(&self, dir: &Path, prefix: &str) -> Result<(), TrainError> {
        write_table(
            &self.per_class_table()?,
            dir,
            &format!("{prefix}_per_class"),
        )?;
        write_table(
            &self.confusion_table()?,
            dir,
            &format!("{prefix}_confusion"),
        )
    }
}

/// Writes `df` as `dir/name.csv` and `dir/name.parquet`.
pub fn write_table(df: &DataFrame, dir: &Path, name: &str) -> Result<(), TrainError> {
    let csv = dir.join(format!("{name}.csv"));
    let mut f = std::fs::File::create(&csv).map_err(|e| TrainError::io(&csv, e))?;
    let mut d = df.clone();
    CsvWriter::new(&mut f)
        .include_header(true)
        .finish(&mut d)
        .map_err(|source| TrainError::Table {
            context: format!("write {}", csv.display()),
            source,
        })?;
    let pq = dir.join(format!("{name}.parquet"));
    let f = std::fs::File::create(&pq).map_err(|e| TrainError::io(&pq, e))?;
    ParquetWriter::new(f)
        .with_compression(ParquetCompression::Uncompressed)
        .finish(&mut d)
        .map_err(|source| TrainError::Table {
            context: format!("write {}", pq.display()),
            source,
        })?;
    Ok(())
}

/// Softmax of logits (stable: shifted by the maximum).
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let sum: f64 = e.iter().sum();
    e.iter().map(|v| v / sum).collect()
}

/// Index of the largest value (the first on ties).
pub fn argmax(v: &[f64]) -> usize {
    v.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |(bi, bv), (i, &x)| {
            if x > bv { (i, x) } else { (bi, bv) }
        })
        .0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_hand_computed() {
        // Positives 0.8, 0.4; negatives 0.6, 0.2: pairs (0.8>0.6, 0.8>0.2, 0.4<0.6, 0.4>0.2) → 3/4.
        let a = binary_auc(&[0.8, 0.4, 0.6, 0.2], &[true, true, false, false]).unwrap();
        assert!((a - 0.75).abs() < 1e-12);
        // Perfect and reversed.
        assert_eq!(binary_auc(&[0.9, 0.1], &[true, false]), Some(1.0));
        assert_eq!(binary_auc(&[0.1, 0.9], &[true, false]), Some(0.0));
        // A tie counts one half: pos 0.5 vs neg 0.5 and neg 0.1 → (0.5 + 1)/2.
        let t = binary_auc(&[0.5, 0.5, 0.1], &[true, false, false]).unwrap();
        assert!((t - 0.75).abs() < 1e-12);
        // One class only: undefined.
        assert_eq!(binary_auc(&[0.3, 0.4], &[true, true]), None);
    }

    #[test]
    fn report_hand_computed() {
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        // Labels a, a, b, c; predictions a, b, b, a.
        let probs = [
            0.7, 0.2, 0.1, //
            0.3, 0.6, 0.1, //
            0.2, 0.7, 0.1, //
            0.5, 0.1, 0.4,
        ];
        let r = evaluate_probs(&probs, &[0, 0, 1, 2], &names).unwrap();
        assert_eq!(r.accuracy, 0.5);
        assert_eq!(
            r.confusion,
            vec![vec![1, 1, 0], vec![0, 1, 0], vec![1, 0, 0]]
        );
        let a = &r.per_class[0];
        assert_eq!((a.precision, a.recall), (0.5, 0.5));
        assert!((a.f1 - 0.5).abs() < 1e-12);
        let b = &r.per_class[1];
        assert_eq!((b.precision, b.recall), (0.5, 1.0));
        assert!((b.f1 - 2.0 / 3.0).abs() < 1e-12);
        let c = &r.per_class[2];
        assert_eq!((c.precision, c.recall, c.f1), (0.0, 0.0, 0.0));
        // AUC class a: pos {0.7, 0.3}, neg {0.2, 0.5}: 0.7>0.2, 0.7>0.5, 0.3>0.2, 0.3<0.5 → 3/4.
        assert!((a.auc.unwrap() - 0.75).abs() < 1e-12);
        // Class b: pos {0.7}, neg {0.2, 0.6, 0.1} → 1. Class c: pos {0.4} vs {0.1,0.1,0.1} → 1.
        assert_eq!(b.auc, Some(1.0));
        assert_eq!(c.auc, Some(1.0));
        assert!((r.macro_auc - (0.75 + 1.0 + 1.0) / 3.0).abs() < 1e-12);
        let expected_loss = -(0.7f64.ln() + 0.3f64.ln() + 0.7f64.ln() + 0.4f64.ln()) / 4.0;
        assert!((r.loss - expected_loss).abs() < 1e-6);

        let dir = tempfile::tempdir().unwrap();
        r.write_tables(dir.path(), "test").unwrap();
        let csv = std::fs::read_to_string(dir.path().join("test_confusion.csv")).unwrap();
        assert_eq!(
            csv.lines().next().unwrap(),
            "true_class,pred_0,pred_1,pred_2"
        );
        assert_eq!(csv.lines().nth(3).unwrap(), "c,1,0,0");
        assert!(
            dir.path()
                .join("test_per_class.parquet")
                .metadata()
                .unwrap()
                .len()
                > 0
        );
    }

    #[test]
    fn rejects_mismatched_inputs() {
        let names = vec!["a".to_string(), "b".to_string()];
        assert!(evaluate_probs(&[0.5, 0.5], &[0, 1], &names).is_err());
        assert!(evaluate_probs(&[0.5, 0.5], &[2], &names).is_err());
    }

    #[test]
    fn softmax_and_argmax() {
        let p = softmax(&[1.0, 3.0, 2.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(argmax(&p), 1);
        let big = softmax(&[1000.0, 999.0]);
        assert!(big[0].is_finite() && big[0] > big[1]);
    }
}
