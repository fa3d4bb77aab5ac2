//! Splitting one data set across K simulated hospitals, deterministically by seed, and the
//! per-hospital, per-class summary table.
//!
//! Schemes:
//! * `iid`: a uniform shuffle dealt into K near-equal shares;
//! * `dirichlet`: label skew — for each class, the shares of the K hospitals are drawn from
//!   Dirichlet(α·1) (Hsu et al. 2019); small α gives each hospital few classes;
//! * `quantity`: quantity skew — hospital sizes drawn from Dirichlet(α·1), labels IID;
//! * `column`: the real site of each image from a manifest's site column.
//!
//! With `group_by_patient`, the unit that is shuffled and assigned is a patient (all of that
//! patient's images), so no patient's images are split across hospitals; [`split_by_group`]
//! does the same for train/val/test splits.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use polars::prelude::*;
use rand::rngs::ChaCha8Rng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Gamma};

use crate::error::{DatasetError, Result};
use crate::image_set::ImageSet;

/// How images are assigned to hospitals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scheme {
    /// Uniformly at random, near-equal sizes.
    #[default]
    Iid,
    /// Label skew: per-class shares from Dirichlet(α).
    Dirichlet,
    /// Quantity skew: hospital sizes from Dirichlet(α), labels IID.
    Quantity,
    /// By the manifest's site column (one hospital per distinct site, in sorted order).
    Column,
}

/// Partitioning settings (`[partition]` in a TOML config).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionConfig {
    /// Number of hospitals K (for `column`: 0 or the number of distinct sites).
    pub hospitals: usize,
    /// `iid` (default), `dirichlet`, `quantity` or `column`.
    #[serde(default)]
    pub scheme: Scheme,
    /// Dirichlet concentration α for `dirichlet` and `quantity` (e.g. 0.1 very skewed, 100
    /// nearly IID). Required by those schemes.
    #[serde(default)]
    pub alpha: Option<f64>,
    /// Assign whole patients (needs patient ids: a patient column or DICOM Patient IDs) so no
    /// patient straddles hospitals.
    #[serde(default)]
    pub group_by_patient: bool,
    /// Seed of the shuffle and the Dirichlet draws.
    #[serde(default)]
    pub seed: u64,
    /// Every hospital must get at least this many images (draws are retried until it does).
    #[serde(default = "one")]
    pub min_samples: usize,
}

fn one() -> usize {
    1
}

impl PartitionConfig {
    /// IID over `hospitals` with seed 0.
    pub fn iid(hospitals: usize) -> Self {
        Self {
            hospitals,
            scheme: Scheme::Iid,
            alpha: None,
            group_by_patient: false,
            seed: 0,
            min_samples: 1,
        }
    }
}

/// Which images each hospital holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Hospital names (`h0`, `h1`, … or the site names for `column`).
    pub names: Vec<String>,
    /// Sorted image indices of each hospital.
    pub indices: Vec<Vec<usize>>,
}

impl Partition {
    /// Number of hospitals.
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no hospitals.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// Images per hospital.
    pub fn sizes(&self) -> Vec<usize> {
        self.indices.iter().map(Vec::len).collect()
    }
}

/// A unit of assignment: one image, or all images of one patient.
struct Unit {
    members: Vec<usize>,
    label: u32,
}

fn units(set: &ImageSet, labels: &[u32], by_patient: bool) -> Result<Vec<Unit>> {
    if !by_patient {
        return Ok(labels
            .iter()
            .enumerate()
            .map(|(i, &l)| Unit {
                members: vec![i],
                label: l,
            })
            .collect());
    }
    let patients = set.patients().ok_or_else(|| {
        DatasetError::invalid(
            "partition",
            "group_by_patient needs patient ids (a manifest patient column or DICOM Patient IDs)",
        )
    })?;
    let mut order: Vec<&str> = Vec::new();
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, p) in patients.iter().enumerate() {
        groups
            .entry(p.as_str())
            .or_insert_with(|| {
                order.push(p.as_str());
                Vec::new()
            })
            .push(i);
    }
    Ok(order
        .into_iter()
        .map(|p| {
            let members = groups.remove(p).unwrap_or_default();
            // Majority label; ties go to the smaller class index.
            let mut count: BTreeMap<u32, usize> = BTreeMap::new();
            for &i in &members {
                *count.entry(labels[i]).or_default() += 1;
            }
            let label = count
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
                .map(|(&l, _)| l)
                .unwrap_or(0);
            Unit { members, label }
        })
        .collect())
}

fn dirichlet(rng: &mut ChaCha8Rng, alpha: f64, k: usize) -> Result<Vec<f64>> {
    let gamma = Gamma::new(alpha, 1.0)
        .map_err(|e| DatasetError::invalid("partition", format!("alpha {alpha}: {e}")))?;
    let mut v: Vec<f64> = (0..k).map(|_| gamma.sample(rng)).collect();
    let s: f64 = v.iter().sum();
    if s > 0.0 && s.is_finite() {
        v.iter_mut().for_each(|x| *x /= s);
    } else {
        // Every draw underflowed (tiny α): all mass on one hospital.
        v.iter_mut().for_each(|x| *x = 0.0);
        let j = rng.random_range(0..k);
        v[j] = 1.0;
    }
    Ok(v)
}

/// Cut points of `n` items by cumulative proportions `p`.
fn cuts(p: &[f64], n: usize) -> Vec<usize> {
    let mut acc = 0.0;
    let mut out = Vec::with_capacity(p.len());
    for (j, &x) in p.iter().enumerate() {
        acc += x;
        out.push(if j + 1 == p.len() {
            n
        } else {
            ((acc * n as f64).round() as usize).min(n)
        });
    }
    out
}

/// Assigns images to hospitals. `labels` are the class labels of `set`.
pub fn partition(set: &ImageSet, cfg: &PartitionConfig) -> Result<Partition> {
    let labels = set.class_labels()?;
    let n = labels.len();
    if cfg.scheme == Scheme::Column {
        return by_column(set, cfg);
    }
    let k = cfg.hospitals;
    if k == 0 {
        return Err(DatasetError::invalid(
            "partition",
            "hospitals must be at least 1",
        ));
    }
    let mut us = units(set, labels, cfg.group_by_patient)?;
    if us.len() < k {
        return Err(DatasetError::invalid(
            "partition",
            format!(
                "{} {} cannot be spread over {k} hospitals",
                us.len(),
                if cfg.group_by_patient {
                    "patients"
                } else {
                    "images"
                }
            ),
        ));
    }
    if cfg.min_samples.saturating_mul(k) > n {
        return Err(DatasetError::invalid(
            "partition",
            format!(
                "{k} hospitals × min_samples {} > {n} images",
                cfg.min_samples
            ),
        ));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let alpha = || -> Result<f64> {
        match cfg.alpha {
            Some(a) if a > 0.0 && a.is_finite() => Ok(a),
            Some(a) => Err(DatasetError::invalid(
                "partition",
                format!("alpha must be positive and finite, got {a}"),
            )),
            None => Err(DatasetError::invalid(
                "partition",
                format!("scheme {:?} needs alpha", cfg.scheme),
            )),
        }
    };

    let assign: Vec<Vec<usize>> = match cfg.scheme {
        Scheme::Iid => {
            us.shuffle(&mut rng);
            if cfg.group_by_patient {
                // Largest patients first onto the currently smallest hospital (balanced sizes).
                us.sort_by_key(|u| std::cmp::Reverse(u.members.len()));
                let mut out: Vec<Vec<usize>> = vec![Vec::new(); k];
                let mut load = vec![0usize; k];
                for (ui, u) in us.iter().enumerate() {
                    let j = (0..k).min_by_key(|&j| (load[j], j)).unwrap_or(0);
                    load[j] += u.members.len();
                    out[j].push(ui);
                }
                out
            } else {
                let c = cuts(&vec![1.0 / k as f64; k], us.len());
                let mut start = 0;
                c.iter()
                    .map(|&end| {
                        let v: Vec<usize> = (start..end).collect();
                        start = end;
                        v
                    })
                    .collect()
            }
        }
        Scheme::Dirichlet => {
            let a = alpha()?;
            let classes = us.iter().map(|u| u.label).max().unwrap_or(0) as usize + 1;
            let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); classes];
            for (ui, u) in us.iter().enumerate() {
                by_class[u.label as usize].push(ui);
            }
            let mut attempt = 0;
            loop {
                let mut out: Vec<Vec<usize>> = vec![Vec::new(); k];
                for members in &by_class {
                    let mut m = members.clone();
                    m.shuffle(&mut rng);
                    let p = dirichlet(&mut rng, a, k)?;
                    let mut start = 0;
                    for (j, end) in cuts(&p, m.len()).into_iter().enumerate() {
                        out[j].extend_from_slice(&m[start..end]);
                        start = end;
                    }
                }
                if ok_sizes(&out, &us, cfg.min_samples) {
                    break out;
                }
                attempt += 1;
                if attempt >= 1000 {
                    return Err(too_skewed(cfg));
                }
            }
        }
        Scheme::Quantity => {
            let a = alpha()?;
            let mut attempt = 0;
            loop {
                let mut order: Vec<usize> = (0..us.len()).collect();
                order.shuffle(&mut rng);
                let p = dirichlet(&mut rng, a, k)?;
                let mut out: Vec<Vec<usize>> = vec![Vec::new(); k];
                // Walk the shuffled units, moving to the next hospital once its share of the
                // images is reached.
                let targets = cuts(&p, n);
                let mut j = 0;
                let mut taken = 0usize;
                for ui in order {
                    while j + 1 < k && taken >= targets[j] {
                        j += 1;
                    }
                    taken += us[ui].members.len();
                    out[j].push(ui);
                }
                if ok_sizes(&out, &us, cfg.min_samples) {
                    break out;
                }
                attempt += 1;
                if attempt >= 1000 {
                    return Err(too_skewed(cfg));
                }
            }
        }
        Scheme::Column => unreachable!("handled above"),
    };
    let indices = assign
        .into_iter()
        .map(|ui| {
            let mut v: Vec<usize> = ui
                .into_iter()
                .flat_map(|u| us[u].members.iter().copied())
                .collect();
            v.sort_unstable();
            v
        })
        .collect();
    Ok(Partition {
        names: (0..k).map(|j| format!("h{j}")).collect(),
        indices,
    })
}

fn ok_sizes(out: &[Vec<usize>], us: &[Unit], min: usize) -> bool {
    out.iter()
        .all(|h| h.iter().map(|&u| us[u].members.len()).sum::<usize>() >= min.max(1))
}

fn too_skewed(cfg: &PartitionConfig) -> DatasetError {
    DatasetError::invalid(
        "partition",
        format!(
            "no draw in 1000 gave every one of {} hospitals at least {} images; raise alpha, \
             lower min_samples or use fewer hospitals",
            cfg.hospitals,
            cfg.min_samples.max(1)
        ),
    )
}

fn by_column(set: &ImageSet, cfg: &PartitionConfig) -> Result<Partition> {
    let sites = set.sites().ok_or_else(|| {
        DatasetError::invalid(
            "partition",
            "scheme \"column\" needs a site column in the manifest (columns.site)",
        )
    })?;
    let mut map: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, s) in sites.iter().enumerate() {
        map.entry(s.as_str()).or_default().push(i);
    }
    if cfg.hospitals != 0 && cfg.hospitals != map.len() {
        return Err(DatasetError::invalid(
            "partition",
            format!(
                "hospitals = {} but the site column has {} distinct sites",
                cfg.hospitals,
                map.len()
            ),
        ));
    }
    if cfg.group_by_patient {
        let patients = set.patients().ok_or_else(|| {
            DatasetError::invalid("partition", "group_by_patient needs patient ids (a manifest patient column or DICOM Patient IDs)")
        })?;
        let mut site_of: HashMap<&str, &str> = HashMap::new();
        for (p, s) in patients.iter().zip(sites) {
            if let Some(prev) = site_of.insert(p, s)
                && prev != s
            {
                return Err(DatasetError::invalid(
                    "partition",
                    format!("patient {p:?} has images at two sites ({prev:?} and {s:?})"),
                ));
            }
        }
    }
    Ok(Partition {
        names: map.keys().map(|s| s.to_string()).collect(),
        indices: map.into_values().collect(),
    })
}

/// Splits `n` images into train/val/test by fractions, deterministically by seed. With
/// `groups` (patient ids), whole groups go to one split, so no patient is in two splits.
pub fn split_by_group(
    n: usize,
    groups: Option<&[String]>,
    val_fraction: f64,
    test_fraction: f64,
    seed: u64,
) -> Result<[Vec<usize>; 3]> {
    if !(0.0..1.0).contains(&val_fraction)
        || !(0.0..1.0).contains(&test_fraction)
        || val_fraction + test_fraction >= 1.0
    {
        return Err(DatasetError::invalid(
            "split",
            format!(
                "val_fraction {val_fraction} + test_fraction {test_fraction} must be in [0, 1)"
            ),
        ));
    }
    let mut units: Vec<Vec<usize>> = match groups {
        None => (0..n).map(|i| vec![i]).collect(),
        Some(g) => {
            if g.len() != n {
                return Err(DatasetError::invalid(
                    "split",
                    "one group id per image needed",
                ));
            }
            let mut order = Vec::new();
            let mut map: HashMap<&str, Vec<usize>> = HashMap::new();
            for (i, p) in g.iter().enumerate() {
                map.entry(p.as_str())
                    .or_insert_with(|| {
                        order.push(p.as_str());
                        Vec::new()
                    })
                    .push(i);
            }
            order
                .into_iter()
                .map(|p| map.remove(p).unwrap_or_default())
                .collect()
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    units.shuffle(&mut rng);
    let (val_target, test_target) = (
        (val_fraction * n as f64).round() as usize,
        (test_fraction * n as f64).round() as usize,
    );
    let mut out: [Vec<usize>; 3] = [Vec::new(), Vec::new(), Vec::new()];
    for u in units {
        let slot = if out[2].len() < test_target {
            2
        } else if out[1].len() < val_target {
            1
        } else {
            0
        };
        out[slot].extend(u);
    }
    for v in &mut out {
        v.sort_unstable();
    }
    Ok(out)
}

/// Patients whose images sit in more than one of the given index sets (should be empty).
pub fn straddling_patients(patients: &[String], sets: &[Vec<usize>]) -> Vec<String> {
    let mut home: HashMap<&str, usize> = HashMap::new();
    let mut bad = std::collections::BTreeSet::new();
    for (j, s) in sets.iter().enumerate() {
        for &i in s {
            let p = patients[i].as_str();
            if let Some(&h) = home.get(p) {
                if h != j {
                    bad.insert(p.to_string());
                }
            } else {
                home.insert(p, j);
            }
        }
    }
    bad.into_iter().collect()
}

/// The per-hospital table: `hospital`, `images`, then one count column per class (named by the
/// class names), and a last `total` row.
pub fn summary(part: &Partition, labels: &[u32], class_names: &[String]) -> Result<DataFrame> {
    let k = class_names.len();
    let mut counts: Vec<Vec<u64>> = vec![vec![0; part.len() + 1]; k];
    let mut sizes = vec![0u64; part.len() + 1];
    for (h, idx) in part.indices.iter().enumerate() {
        for &i in idx {
            let l = labels[i] as usize;
            if l < k {
                counts[l][h] += 1;
                counts[l][part.len()] += 1;
            }
            sizes[h] += 1;
            sizes[part.len()] += 1;
        }
    }
    let mut hospitals: Vec<String> = part.names.clone();
    hospitals.push("total".into());
    let mut cols = vec![
        Column::new("hospital".into(), hospitals),
        Column::new("images".into(), sizes),
    ];
    let mut seen = std::collections::HashSet::new();
    for (c, name) in class_names.iter().enumerate() {
        // Duplicate or clashing names would make an invalid frame; fall back to the index.
        let col = if seen.insert(name.clone()) && name != "hospital" && name != "images" {
            name.clone()
        } else {
            format!("class_{c}")
        };
        cols.push(Column::new(col.into(), counts[c].clone()));
    }
    DataFrame::new_infer_height(cols).map_err(|e| DatasetError::table("partition summary", e))
}

/// Writes a table as CSV (with header).
pub fn write_csv(df: &DataFrame, path: &Path) -> Result<()> {
    let mut f = std::fs::File::create(path).map_err(|e| DatasetError::io(path, "create", e))?;
    let mut df = df.clone();
    CsvWriter::new(&mut f)
        .include_header(true)
        .finish(&mut df)
        .map_err(|e| DatasetError::table(format!("write {}", path.display()), e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image_set::Labels;
    use ndarray::Array4;

    fn set_with(
        labels: Vec<u32>,
        patients: Option<Vec<String>>,
        sites: Option<Vec<String>>,
    ) -> ImageSet {
        let n = labels.len();
        ImageSet::new(
            Array4::zeros((n, 1, 1, 1)),
            Labels::Class(labels),
            patients,
            sites,
        )
        .unwrap()
    }

    fn is_exact_cover(p: &Partition, n: usize) -> bool {
        let mut all: Vec<usize> = p.indices.iter().flatten().copied().collect();
        all.sort_unstable();
        all == (0..n).collect::<Vec<_>>()
    }

    #[test]
    fn iid_is_balanced_cover_and_deterministic() {
        let s = set_with((0..103).map(|i| i % 4).collect(), None, None);
        let cfg = PartitionConfig {
            seed: 3,
            ..PartitionConfig::iid(5)
        };
        let p = partition(&s, &cfg).unwrap();
        assert!(is_exact_cover(&p, 103));
        let sizes = p.sizes();
        assert!(sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 1);
        assert_eq!(p, partition(&s, &cfg).unwrap());
        let other = partition(&s, &PartitionConfig { seed: 4, ..cfg }).unwrap();
        assert_ne!(p, other);
    }

    #[test]
    fn dirichlet_small_alpha_skews_labels() {
        let labels: Vec<u32> = (0..2000).map(|i| i % 10).collect();
        let s = set_with(labels.clone(), None, None);
        let mk = |alpha| PartitionConfig {
            hospitals: 10,
            scheme: Scheme::Dirichlet,
            alpha: Some(alpha),
            group_by_patient: false,
            seed: 1,
            min_samples: 10,
        };
        // Mean over hospitals of the share of the hospital's most frequent class.
        let dominance = |p: &Partition| {
            p.indices
                .iter()
                .map(|idx| {
                    let mut c = [0usize; 10];
                    idx.iter().for_each(|&i| c[labels[i] as usize] += 1);
                    *c.iter().max().unwrap() as f64 / idx.len() as f64
                })
                .sum::<f64>()
                / p.len() as f64
        };
        let skewed = partition(&s, &mk(0.1)).unwrap();
        let flat = partition(&s, &mk(1000.0)).unwrap();
        assert!(is_exact_cover(&skewed, 2000) && is_exact_cover(&flat, 2000));
        assert!(skewed.sizes().iter().all(|&x| x >= 10));
        assert!(dominance(&skewed) > 0.4, "{}", dominance(&skewed));
        assert!(dominance(&flat) < 0.2, "{}", dominance(&flat));
        assert!(matches!(
            partition(
                &s,
                &PartitionConfig {
                    alpha: None,
                    ..mk(1.0)
                }
            ),
            Err(DatasetError::Invalid { .. })
        ));
    }

    #[test]
    fn quantity_skew_varies_sizes() {
        let s = set_with(vec![0; 1000], None, None);
        let cfg = PartitionConfig {
            hospitals: 5,
            scheme: Scheme::Quantity,
            alpha: Some(0.5),
            group_by_patient: false,
            seed: 9,
            min_samples: 5,
        };
        let p = partition(&s, &cfg).unwrap();
        assert!(is_exact_cover(&p, 1000));
        let sizes = p.sizes();
        assert!(sizes.iter().all(|&x| x >= 5));
        assert!(sizes.iter().max().unwrap() > &(2 * sizes.iter().min().unwrap()));
    }

    #[test]
    fn patients_never_straddle() {
        let n = 300;
        let patients: Vec<String> = (0..n).map(|i| format!("p{}", (i * 7) % 37)).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let s = set_with(labels, Some(patients.clone()), None);
        for scheme in [Scheme::Iid, Scheme::Dirichlet, Scheme::Quantity] {
            let cfg = PartitionConfig {
                hospitals: 4,
                scheme,
                alpha: Some(1.0),
                group_by_patient: true,
                seed: 5,
                min_samples: 1,
            };
            let p = partition(&s, &cfg).unwrap();
            assert!(is_exact_cover(&p, n as usize));
            assert!(
                straddling_patients(&patients, &p.indices).is_empty(),
                "{scheme:?}"
            );
        }
        let [tr, va, te] = split_by_group(n as usize, Some(&patients), 0.1, 0.2, 1).unwrap();
        assert_eq!(tr.len() + va.len() + te.len(), n as usize);
        assert!(!te.is_empty() && !va.is_empty());
        assert!(straddling_patients(&patients, &[tr, va, te]).is_empty());
    }

    #[test]
    fn site_column_and_summary() {
        let sites: Vec<String> = ["b", "a", "b", "c", "a"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = set_with(vec![0, 1, 1, 0, 0], None, Some(sites));
        let p = partition(
            &s,
            &PartitionConfig {
                scheme: Scheme::Column,
                ..PartitionConfig::iid(0)
            },
        )
        .unwrap();
        assert_eq!(p.names, vec!["a", "b", "c"]);
        assert_eq!(p.indices, vec![vec![1, 4], vec![0, 2], vec![3]]);
        let df = summary(&p, &[0, 1, 1, 0, 0], &["neg".into(), "pos".into()]).unwrap();
        assert_eq!(df.height(), 4);
        let pos_col = df.column("pos").unwrap().u64().unwrap();
        let pos: Vec<Option<u64>> = (0..pos_col.len()).map(|i| pos_col.get(i)).collect();
        assert_eq!(pos, vec![Some(1), Some(1), Some(0), Some(2)]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.csv");
        write_csv(&df, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("hospital,images,neg,pos\n"), "{text}");
        assert!(text.contains("total,5,3,2"));
        // Wrong hospital count for the sites.
        assert!(
            partition(
                &s,
                &PartitionConfig {
                    scheme: Scheme::Column,
                    ..PartitionConfig::iid(2)
                }
            )
            .is_err()
        );
    }
}
