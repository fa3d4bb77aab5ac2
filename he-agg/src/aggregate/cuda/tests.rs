//! The fallback (on a simulated device that fails), backend selection, and — when a CUDA device
//! is present — the GPU against the CPU backend, word for word. Without a device the GPU tests
//! print "skipped: no CUDA device" and pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::error::CudaError;
use super::fallback::{DeviceSum, FallbackAccumulator, Input};
use super::reference::{self, WeightConst};
use crate::aggregate::{Aggregator, Backend, BackendChoice, CpuBackend, Shape, select_backend};
use crate::ckks::{Ciphertext, CkksContext, Parameters};
use crate::ring::{Poly, Prng};

fn ctx() -> Arc<CkksContext> {
    CkksContext::new(Parameters::insecure_for_tests(11, &[60, 60, 50], &[], 1, 40.0).unwrap())
        .unwrap()
}

fn shape(ctx: &CkksContext, degree: usize) -> Shape {
    Shape {
        level: ctx.max_level(),
        degree,
        scale: ctx.default_scale(),
    }
}

/// Ciphertexts with uniformly random reduced residues.
fn random_cts(ctx: &CkksContext, count: usize, degree: usize, seed: u8) -> Vec<Ciphertext> {
    let (level, n) = (ctx.max_level(), ctx.n());
    let mut prng = Prng::from_seed(&[seed; 32]);
    (0..count)
        .map(|_| Ciphertext {
            parts: (0..=degree)
                .map(|_| {
                    let mut data = Vec::with_capacity(level * n);
                    for i in 0..level {
                        let q = ctx.rlwe().q_modulus(i).value();
                        data.extend((0..n).map(|_| prng.next_u64() % q));
                    }
                    Poly::from_data(n, data)
                })
                .collect(),
            scale: ctx.default_scale(),
        })
        .collect()
}

fn weights(count: usize, seed: u8) -> Vec<u64> {
    let mut prng = Prng::from_seed(&[seed; 32]);
    (0..count)
        .map(|_| 1 + prng.next_u64() % (1 << 40))
        .collect()
}

fn sum_with(
    backend: &dyn Backend,
    ctx: &Arc<CkksContext>,
    shape: Shape,
    cts: &[Ciphertext],
    weights: &[u64],
    batch: usize,
) -> Ciphertext {
    let mut agg = Aggregator::new(ctx, backend, shape, batch).unwrap();
    for (c, &w) in cts.iter().zip(weights) {
        agg.push(c.clone(), w).unwrap();
    }
    agg.finish().unwrap()
}

/// A device made of the kernel's reference arithmetic that breaks at a chosen call.
struct FlakyDevice {
    data: Vec<u64>,
    moduli: Vec<u64>,
    log_n: u32,
    calls: usize,
    fail_fold_at: Option<usize>,
    fail_read_at: Option<usize>,
}

impl DeviceSum for FlakyDevice {
    fn fold(&mut self, inputs: &[Input<'_>]) -> Result<(), CudaError> {
        self.calls += 1;
        if self.fail_fold_at == Some(self.calls) {
            // a failure after part of the work: the device state is garbage
            self.data.iter_mut().for_each(|w| *w = 12345);
            return Err(CudaError::Driver("simulated launch failure".into()));
        }
        let level = self.moduli.len();
        for (segments, w) in inputs {
            let x: Vec<u64> = segments.concat();
            let consts: Vec<WeightConst> = self
                .moduli
                .iter()
                .map(|&q| WeightConst::new(*w, q))
                .collect();
            reference::fold(
                &mut self.data,
                0,
                &x,
                1,
                self.log_n,
                level,
                &self.moduli,
                &consts,
            );
        }
        Ok(())
    }

    fn read(&mut self, out: &mut [u64]) -> Result<(), CudaError> {
        if self.fail_read_at == Some(self.calls) {
            // half the words arrive before the failure
            let half = out.len() / 2;
            out[..half].copy_from_slice(&self.data[..half]);
            return Err(CudaError::Driver("simulated copy failure".into()));
        }
        out.copy_from_slice(&self.data);
        Ok(())
    }
}

/// A backend over [`FlakyDevice`]s, as `CudaBackend` is over the GPU.
#[derive(Debug)]
struct FlakyBackend {
    fail_fold_at: Option<usize>,
    fail_read_at: Option<usize>,
    failed: Arc<AtomicBool>,
}

impl Backend for FlakyBackend {
    fn name(&self) -> &str {
        "flaky"
    }

    fn accumulator(
        &self,
        ctx: &Arc<CkksContext>,
        shape: Shape,
    ) -> Result<Box<dyn crate::aggregate::Accumulator>, crate::aggregate::AggregateError> {
        let moduli: Vec<u64> = (0..shape.level)
            .map(|i| ctx.rlwe().q_modulus(i).value())
            .collect();
        let device = FlakyDevice {
            data: vec![0; (shape.degree + 1) * shape.level * ctx.n()],
            moduli,
            log_n: ctx.n().trailing_zeros(),
            calls: 0,
            fail_fold_at: self.fail_fold_at,
            fail_read_at: self.fail_read_at,
        };
        Ok(Box::new(FallbackAccumulator::new(
            ctx,
            shape,
            Box::new(device),
            self.failed.clone(),
        )))
    }
}

#[test]
fn a_failing_device_falls_back_to_the_cpu_with_the_same_words() {
    let ctx = ctx();
    let cts = random_cts(&ctx, 10, 1, 1);
    let w = weights(10, 2);
    let want = sum_with(&CpuBackend, &ctx, shape(&ctx, 1), &cts, &w, 3);
    for (fold, read) in [
        (None, None),
        (Some(1), None),
        (Some(3), None),
        (None, Some(1)),
        (None, Some(2)),
        (Some(4), None),
    ] {
        let backend = FlakyBackend {
            fail_fold_at: fold,
            fail_read_at: read,
            failed: Arc::new(AtomicBool::new(false)),
        };
        let got = sum_with(&backend, &ctx, shape(&ctx, 1), &cts, &w, 3);
        assert_eq!(
            got, want,
            "fold failure at {fold:?}, read failure at {read:?}"
        );
        // batches of 3 over 10 inputs: 4 folds, so every configured failure happened
        assert_eq!(
            backend.failed.load(Ordering::Relaxed),
            fold.is_some() || read.is_some()
        );
    }
}

#[test]
fn backend_choices_parse_and_select() {
    for (s, c) in [
        ("auto", BackendChoice::Auto),
        ("cpu", BackendChoice::Cpu),
        ("cuda", BackendChoice::Cuda),
    ] {
        assert_eq!(s.parse::<BackendChoice>().unwrap(), c);
        assert_eq!(c.to_string(), s);
    }
    assert!("gpu".parse::<BackendChoice>().is_err());
    assert_eq!(select_backend(BackendChoice::Cpu).unwrap().name(), "cpu");
    // auto always gives a backend: the GPU when one loads, else the CPU
    let auto = select_backend(BackendChoice::Auto).unwrap();
    assert!(["cpu", "cuda"].contains(&auto.name()));
    // an explicit cuda is a GPU or a clear error, never a silent CPU
    match select_backend(BackendChoice::Cuda) {
        Ok(b) => assert_eq!(b.name(), "cuda"),
        Err(e) => {
            assert_eq!(auto.name(), "cpu");
            println!("skipped: no CUDA device ({e})");
        }
    }
}

#[cfg(feature = "cuda")]
mod gpu {
    use super::*;
    use crate::aggregate::CudaBackend;
    use crate::aggregate::cuda::device::Device;

    /// The device, or None after printing why the test is skipped.
    fn device(slot_words: usize) -> Option<Arc<Device>> {
        match Device::open_with_slots(0, slot_words) {
            Ok(d) => Some(d),
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                None
            }
        }
    }

    #[test]
    fn gpu_sums_equal_the_cpu_backend_word_for_word() {
        let backend = match CudaBackend::new(0) {
            Ok(b) => b,
            Err(e) => {
                println!("skipped: no CUDA device ({e})");
                return;
            }
        };
        println!("device: {}", backend.device().name());
        let ctx = ctx();
        for degree in [0usize, 1, 2] {
            let cts = random_cts(&ctx, 37, degree, 3);
            let w = weights(37, 4);
            for batch in [1usize, 5, 32, 64] {
                let want = sum_with(&CpuBackend, &ctx, shape(&ctx, degree), &cts, &w, batch);
                let got = sum_with(&backend, &ctx, shape(&ctx, degree), &cts, &w, batch);
                assert_eq!(got, want, "degree {degree}, batch {batch}");
            }
        }
        assert!(!backend.has_failed());
    }

    #[test]
    fn small_slots_split_batches_and_ciphertexts_and_agree() {
        // 2 components × 3 limbs × 2048 = 12,288 words per ciphertext: a 5,000-word slot cuts
        // every ciphertext into word ranges; a 40,000-word slot takes three at a time
        let ctx = ctx();
        let cts = random_cts(&ctx, 11, 1, 5);
        let w = weights(11, 6);
        let want = sum_with(&CpuBackend, &ctx, shape(&ctx, 1), &cts, &w, 11);
        for slot_words in [5_000usize, 40_000] {
            let Some(dev) = device(slot_words) else {
                return;
            };
            let moduli: Vec<u64> = (0..3).map(|i| ctx.rlwe().q_modulus(i).value()).collect();
            let words = 2 * 3 * ctx.n();
            let mut sum = dev.new_sum(&moduli, ctx.n(), words).unwrap();
            let inputs: Vec<Input<'_>> = cts
                .iter()
                .zip(&w)
                .map(|(c, &w)| (c.parts.iter().map(Poly::data).collect(), w))
                .collect();
            sum.fold(&inputs[..4]).unwrap();
            sum.fold(&inputs[4..]).unwrap();
            let mut out = vec![0; words];
            sum.read(&mut out).unwrap();
            let want_words: Vec<u64> = want.parts.iter().flat_map(|p| p.data().to_vec()).collect();
            assert_eq!(out, want_words, "slot of {slot_words} words");
        }
    }

    #[test]
    fn resident_inputs_fold_to_the_same_words() {
        let Some(dev) = device(super::super::device::SLOT_WORDS) else {
            return;
        };
        let ctx = ctx();
        let cts = random_cts(&ctx, 9, 1, 7);
        let w = weights(9, 8);
        let want = sum_with(&CpuBackend, &ctx, shape(&ctx, 1), &cts, &w, 9);
        let moduli: Vec<u64> = (0..3).map(|i| ctx.rlwe().q_modulus(i).value()).collect();
        let words = 2 * 3 * ctx.n();
        let flat: Vec<u64> = cts
            .iter()
            .flat_map(|c| c.parts.iter().flat_map(|p| p.data().to_vec()))
            .collect();
        let resident = dev.upload(&flat).unwrap();
        let mut sum = dev.new_sum(&moduli, ctx.n(), words).unwrap();
        sum.fold_resident(&resident, &w).unwrap();
        let mut out = vec![0; words];
        sum.read(&mut out).unwrap();
        let want_words: Vec<u64> = want.parts.iter().flat_map(|p| p.data().to_vec()).collect();
        assert_eq!(out, want_words);
    }
}
