//! Head training on the device path equals the CPU trainer word for word: the same run stepped
//! on the CPU, through the GPU kernels' reference executor, and wherever `auto` puts it (a GPU
//! on a machine that has one), refreshed with one set of shares, reaches the same states.

use crate::aggregate::BackendChoice;
use crate::multiparty::RefreshShare;
use crate::ring::Prng;

use super::tests::{Keyed, ctx, encrypt_chunks, examples, keyed};
use super::*;

#[test]
fn steps_on_the_device_path_equal_the_cpu_trainers_word_for_word() {
    let ctx = ctx();
    let (features, classes) = (20, 3);
    let plan = HeadPlan::with_context(ctx.clone(), features, classes).unwrap();
    let l = plan.layout().clone();
    let parties = 3;
    let Keyed {
        secrets,
        s,
        pk,
        keys,
    } = keyed(&plan, parties);
    // three chunks (the last one short), two per batch: accumulators over chunks, a batch of
    // one, and momentum from the second step on
    let (xs, ys) = examples(2 * l.samples() + 7, features, classes, 3);
    let mut enc = ctx.pk_encryptor(&pk).unwrap();
    let chunks = encrypt_chunks(&ctx, &mut enc, &l, &xs, &ys);
    let settings = RunSettings {
        epochs: 2,
        batch_chunks: 2,
        lr: 1.0,
        momentum: 0.5,
    };
    let run = || {
        HeadRun::new(
            plan.clone(),
            &pk,
            &keys,
            settings,
            &[4; 32],
            b"device",
            (parties, parties),
            chunks.clone(),
        )
        .unwrap()
    };
    let mut cpu = run();
    let mut reference = run();
    reference.place_on_host_reference(&keys).unwrap();
    assert_eq!(reference.placed(), "reference executor (CPU)");
    let mut auto = run();
    let placed = auto.place(BackendChoice::Auto, &keys).unwrap().to_string();
    let mut forced_cpu = run();
    assert_eq!(forced_cpu.place(BackendChoice::Cpu, &keys).unwrap(), "CPU");
    #[cfg(not(feature = "cuda"))]
    {
        assert_eq!(placed, "CPU", "auto without CUDA built in");
        let e = run().place(BackendChoice::Cuda, &keys).err().unwrap();
        assert!(e.to_string().contains("CUDA"), "{e}");
    }
    let mut runs = [&mut cpu, &mut reference, &mut auto, &mut forced_cpu];
    let mut prng = Prng::from_seed(&[8; 32]);
    let (steps, _) = runs[0].steps();
    assert_eq!(steps, 4);
    for step in 0..steps {
        for r in runs.iter_mut() {
            r.compute_step().unwrap();
        }
        let want = state_digest(&ctx, runs[0].pending());
        for r in &runs[1..] {
            assert_eq!(
                state_digest(&ctx, r.pending()),
                want,
                "step {step} on {} (auto: {placed})",
                r.placed()
            );
        }
        let sums: Vec<RefreshShare> = runs[0]
            .pending()
            .iter()
            .map(|ct| {
                let f = runs[0].refresh();
                let mut acc = f.share(&secrets[0], ct, &mut prng).unwrap();
                for k in &secrets[1..] {
                    f.aggregate(&mut acc, &f.share(k, ct, &mut prng).unwrap())
                        .unwrap();
                }
                acc
            })
            .collect();
        for r in runs.iter_mut() {
            r.finish_refresh(&sums).unwrap();
        }
    }
    // and the trained head is a trained one: the step's arithmetic, not a copy of the input
    let dec = ctx.decryptor(&s).unwrap();
    let mut w = vec![0.0; features * classes];
    for (g, ct) in runs[1].weights()[..l.groups()].iter().enumerate() {
        l.unpack_weights(&ctx.decode_reals(&dec.decrypt(ct)).unwrap(), g, &mut w);
    }
    assert!(w.iter().any(|x| x.abs() > 1e-2), "{w:?}");
}
