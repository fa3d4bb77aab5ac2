//! Shared helpers of the integration tests (included with `mod common;`).

use datasets::Normalizer;
use datasets::medmnist;
use training::data::Tensors;

/// Train/test tensors of the real MedMNIST set `name`, normalised with training statistics,
/// train subset of `max_train` images taken with a stride (all classes appear).
pub fn tensors(name: &str, max_train: usize, max_test: usize) -> (Tensors, Tensors, Vec<String>) {
    let d = medmnist::load_workspace(name)
        .unwrap_or_else(|e| panic!("{e} (the tests need the MedMNIST files; set HEAL_DATA_DIR)"));
    let pick = |n: usize, m: usize| -> Vec<usize> {
        let step = (n / m.max(1)).max(1);
        (0..n).step_by(step).take(m).collect()
    };
    let train = d.train.subset(&pick(d.train.len(), max_train));
    let test = d.test.subset(&pick(d.test.len(), max_test));
    let norm = Normalizer::fit(&train).unwrap();
    (
        Tensors::new(&train, &norm).unwrap(),
        Tensors::new(&test, &norm).unwrap(),
        d.info.class_names,
    )
}
