//! Partitioning real data and the invariants of every scheme.

mod common;

use datasets::medmnist::{self, MedMnistOptions};
use datasets::partition::{partition, summary, write_csv};
use datasets::{ImageSet, Labels, PartitionConfig, Scheme};
use ndarray::Array4;
use proptest::prelude::*;

#[test]
fn organamnist_label_skew_summary() {
    let data = medmnist::load(
        "organamnist",
        28,
        &MedMnistOptions {
            data_dir: Some(common::data_dir()),
            offline: true,
            progress: false,
            ..MedMnistOptions::default()
        },
    )
    .unwrap();
    let cfg = PartitionConfig {
        hospitals: 5,
        scheme: Scheme::Dirichlet,
        alpha: Some(0.3),
        group_by_patient: false,
        seed: 42,
        min_samples: 100,
    };
    let p = partition(&data.train, &cfg).unwrap();
    assert_eq!(p, partition(&data.train, &cfg).unwrap());
    let sizes = p.sizes();
    assert_eq!(sizes.iter().sum::<usize>(), data.train.len());
    assert!(sizes.iter().all(|&s| s >= 100));
    let labels = data.train.class_labels().unwrap();
    let table = summary(&p, labels, &data.info.class_names).unwrap();
    assert_eq!(table.height(), 6);
    assert_eq!(table.width(), 2 + 11);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("summary.csv");
    write_csv(&table, &path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("hospital,images,bladder,femur-left"));
    assert!(text.contains(&format!("total,{}", data.train.len())));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn every_scheme_is_a_deterministic_exact_cover(
        labels in prop::collection::vec(0u32..5, 40..200),
        hospitals in 1usize..6,
        scheme in prop::sample::select(vec![Scheme::Iid, Scheme::Dirichlet, Scheme::Quantity]),
        alpha in 0.2f64..50.0,
        seed in any::<u64>(),
    ) {
        let n = labels.len();
        let set = ImageSet::new(Array4::zeros((n, 1, 1, 1)), Labels::Class(labels), None, None).unwrap();
        let cfg = PartitionConfig { hospitals, scheme, alpha: Some(alpha), group_by_patient: false, seed, min_samples: 1 };
        let p = partition(&set, &cfg).unwrap();
        prop_assert_eq!(p.len(), hospitals);
        let mut all: Vec<usize> = p.indices.iter().flatten().copied().collect();
        all.sort_unstable();
        prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
        prop_assert!(p.sizes().iter().all(|&s| s >= 1));
        prop_assert_eq!(p, partition(&set, &cfg).unwrap());
    }
}
