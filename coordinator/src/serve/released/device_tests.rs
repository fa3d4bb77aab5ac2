//! Serving through the device path (`--backend cuda`), on the GPU kernels' reference executor
//! in every test run: a request's answer equals the CPU's byte for byte, a requester's keys go
//! to the device once and stay with its key set, and a deep model's segments and refreshes run
//! there as on the CPU.

use std::sync::Arc;

use he_agg::aggregate::BackendChoice;
use he_agg::infer::testing::{residual_network, tiny_network};

use super::handler::{ReadyRequest, Step};
use super::tests::{Requester, answer_deep, image, requester, requester_for};
use he_agg::infer::Placement;

use super::{KeySet, ServedModel};

fn names() -> Vec<String> {
    vec!["a".into(), "b".into(), "c".into()]
}

/// `cts` (every image's encoded ciphertexts, image after image) as one checked request.
fn ready(
    model: &Arc<ServedModel>,
    r: &Requester,
    keys: &Arc<KeySet>,
    cts: &[Vec<u8>],
) -> ReadyRequest {
    let per = r.plan.spec().input_ciphertexts();
    let mut p = model
        .begin(&r.header((cts.len() / per) as u32), keys.clone())
        .unwrap();
    for ct in cts {
        p.push(ct).unwrap();
    }
    p.finish().unwrap()
}

#[test]
fn a_request_served_on_the_device_path_equals_the_cpu_answer() {
    let cpu = Arc::new(ServedModel::new(tiny_network(), names(), "tiny", 4).unwrap());
    let dev = Arc::new(
        ServedModel::new(tiny_network(), names(), "tiny", 4)
            .unwrap()
            .with_placement(Placement::host_reference()),
    );
    assert!(matches!(cpu.placement(), Placement::Cpu));
    let r = requester();
    let (kc, kd) = (r.key_set(&cpu), r.key_set(&dev));
    // the same encrypted images to both
    let cts: Vec<Vec<u8>> = [image(1), image(2)]
        .iter()
        .flat_map(|im| r.encrypt(im))
        .collect();
    let answer = |model: &Arc<ServedModel>, keys: &Arc<KeySet>| match ready(model, &r, keys, &cts)
        .evaluate()
        .unwrap()
    {
        Step::Done(resp) => resp.ciphertexts,
        Step::Refresh(_) => panic!("a shallow model answers without refreshes"),
    };
    let want = answer(&cpu, &kc);
    assert_eq!(
        answer(&dev, &kd),
        want,
        "the device path's answer differs from the CPU's"
    );
    // the keys went to the device with the first request and stay there
    let first = kd
        .resident(&dev)
        .unwrap()
        .expect("resident on the device path");
    assert_eq!(answer(&dev, &kd), want);
    let again = kd.resident(&dev).unwrap().expect("still resident");
    assert!(Arc::ptr_eq(&first, &again), "the keys were uploaded twice");
    // nothing is uploaded for the CPU
    assert!(kc.resident(&cpu).unwrap().is_none());
    for (i, im) in [image(1), image(2)].iter().enumerate() {
        let got = r.decrypt(&want[i]);
        let reference = r.net.forward(&r.net.normalize_hwc(im).unwrap()).unwrap();
        for (g, w) in got.iter().zip(&reference) {
            assert!((g - *w as f64).abs() < 1e-2, "{got:?} vs {reference:?}");
        }
    }
}

#[test]
fn a_deep_model_served_on_the_device_path_is_answered_after_its_refreshes() {
    let net = residual_network(8, 1, 4, 3, 2, 3);
    let model = Arc::new(
        ServedModel::new(net.clone(), names(), "deep", 4)
            .unwrap()
            .with_placement(Placement::host_reference()),
    );
    let segments = model.plan().spec().segments();
    assert!(segments >= 3, "{segments}");
    let r = requester_for(net.clone());
    let keys = r.key_set(&model);
    let px: Vec<u8> = (0..64).map(|i| ((i * 37 + 11) % 256) as u8).collect();
    answer_deep(&r, ready(&model, &r, &keys, &r.encrypt(&px)), &px, segments);
}

#[test]
fn auto_falls_back_to_the_cpu_and_cuda_without_a_device_says_why() {
    let model = ServedModel::new(tiny_network(), names(), "tiny", 4).unwrap();
    assert!(matches!(
        model.select_placement(BackendChoice::Cpu).unwrap(),
        Placement::Cpu
    ));
    match model.select_placement(BackendChoice::Cuda) {
        // a machine with a GPU (and a build with the `cuda` feature)
        Ok(p) => assert!(p.name().contains("CUDA"), "{}", p.name()),
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("CUDA") || e.contains("NVIDIA") || e.contains("NVRTC"),
                "{e}"
            );
            // then auto takes the CPU
            let auto = model.select_placement(BackendChoice::Auto).unwrap();
            assert!(matches!(auto, Placement::Cpu), "{}", auto.name());
        }
    }
}

#[test]
fn a_device_that_cannot_take_the_keys_falls_back_to_the_cpu_only_under_auto() {
    use he_agg::infer::InferError;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let tries = Arc::new(AtomicUsize::new(0));
    let full = |fallback: bool| {
        let tries = tries.clone();
        Placement::Device {
            name: "a full device".into(),
            open: Box::new(move |_, _| {
                tries.fetch_add(1, Ordering::SeqCst);
                Err(InferError::ModelMismatch("out of device memory"))
            }),
            fallback,
        }
    };
    let r = requester();
    let cts = r.encrypt(&image(3));
    let cpu = Arc::new(ServedModel::new(tiny_network(), names(), "tiny", 4).unwrap());
    let kc = r.key_set(&cpu);
    let Step::Done(want) = ready(&cpu, &r, &kc, &cts).evaluate().unwrap() else {
        panic!("a shallow model answers at once")
    };
    // auto: answered on the CPU, and the device is tried once for the key set
    let auto = Arc::new(
        ServedModel::new(tiny_network(), names(), "tiny", 4)
            .unwrap()
            .with_placement(full(true)),
    );
    let ka = r.key_set(&auto);
    for _ in 0..2 {
        let Step::Done(got) = ready(&auto, &r, &ka, &cts).evaluate().unwrap() else {
            panic!("a shallow model answers at once")
        };
        assert_eq!(got.ciphertexts, want.ciphertexts);
    }
    assert_eq!(tries.load(Ordering::SeqCst), 1);
    // cuda: the request is refused with the device's reason
    let strict = Arc::new(
        ServedModel::new(tiny_network(), names(), "tiny", 4)
            .unwrap()
            .with_placement(full(false)),
    );
    let ks = r.key_set(&strict);
    let e = ready(&strict, &r, &ks, &cts)
        .evaluate()
        .err()
        .expect("refused");
    assert!(e.to_string().contains("out of device memory"), "{e}");
}
