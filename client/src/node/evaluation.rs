//! A round's evaluation beside the next round's training. The model a round's result makes is
//! what the next round trains from, and evaluating it (the validation split every round, the
//! official test split every `test_every`) needs nothing of that training. Run inline, it held
//! back every hospital's next update, the slowest hospital's included. So it runs on threads of
//! its own at a lower priority, taking what training leaves idle, and its metrics are reported
//! once it is done: at the latest once the next round's result is applied, before that round's
//! own evaluation starts, so that a hospital's metrics still arrive round by round. The
//! federation's last round is waited for at once when the kit names the rounds (nothing follows
//! it to overlap with); otherwise when the session ends (`Finished`, a refusal).

use anyhow::Context;
use protocol::FederationMsg;
use protocol::Link;
use protocol::message::{Body, RoundMetrics};
use tracing::info;
use training::params::network_from_flat;
use training::train::{evaluate, select_device};

use super::evaluation_pool::{Evaluated, PendingEvaluation, evaluation_delay};
use super::session::Node;

impl Node {
    /// Evaluates the model `metrics.round` made (the one in `self.state`) beside what follows,
    /// and reports the round's metrics once done (the federation's last round: before returning).
    pub(super) async fn evaluate_round(
        &mut self,
        link: &Link,
        metrics: RoundMetrics,
    ) -> anyhow::Result<()> {
        // one evaluation at a time, reported in round order
        self.report_evaluation(link).await?;
        let round = metrics.round;
        let (spec, global) = (self.data.spec.clone(), self.state.global.clone());
        let (val, test) = (self.data.val.clone(), self.data.test.clone());
        let names = self.data.class_names.clone();
        let test_every = self.cfg.node.test_every;
        let delay = evaluation_delay();
        let job = move || -> anyhow::Result<Evaluated> {
            std::thread::sleep(delay);
            let net = network_from_flat(&spec, &global, &select_device("cpu")?)?;
            let v = val
                .as_ref()
                .map(|v| evaluate(&net, v, &names))
                .transpose()?;
            let t = if test_every > 0 && round.is_multiple_of(test_every) {
                Some(evaluate(&net, &test, &names)?)
            } else {
                None
            };
            Ok((v, t))
        };
        let pool = self.evaluation_pool.clone();
        let task = tokio::task::spawn_blocking(move || pool.install(job));
        self.evaluation = Some(PendingEvaluation { metrics, task });
        if self.cfg.site.rounds.is_some_and(|last| round >= last) {
            // nothing follows the last round to overlap with
            self.report_evaluation(link).await?;
        }
        Ok(())
    }

    /// Reports the evaluation under way once it is done, without waiting for it.
    pub(super) async fn report_evaluation_if_done(&mut self, link: &Link) -> anyhow::Result<()> {
        if self
            .evaluation
            .as_ref()
            .is_some_and(|p| p.task.is_finished())
        {
            self.report_evaluation(link).await?;
        }
        Ok(())
    }

    /// Waits for the evaluation under way, if any, and reports it.
    pub(super) async fn report_evaluation(&mut self, link: &Link) -> anyhow::Result<()> {
        let Some(pending) = self.evaluation.take() else {
            return Ok(());
        };
        let round = pending.metrics.round;
        let evaluated = pending
            .task
            .await
            .with_context(|| format!("evaluating round {round}'s model"))??;
        self.report(link, pending.metrics, evaluated).await
    }

    /// Completes the round's metrics with its evaluation, writes them to `metrics.csv` and
    /// sends them to the coordinator.
    async fn report(
        &mut self,
        link: &Link,
        mut m: RoundMetrics,
        (v, t): Evaluated,
    ) -> anyhow::Result<()> {
        m.val_loss = v.as_ref().map(|r| r.loss as f32).unwrap_or(f32::NAN);
        m.val_acc = v.as_ref().map(|r| r.accuracy as f32).unwrap_or(f32::NAN);
        m.val_auc = v.as_ref().map(|r| r.macro_auc as f32).unwrap_or(f32::NAN);
        m.test_acc = t.as_ref().map(|r| r.accuracy as f32).unwrap_or(f32::NAN);
        m.test_auc = t.as_ref().map(|r| r.macro_auc as f32).unwrap_or(f32::NAN);
        let round = m.round;
        info!(
            round,
            test_acc = m.test_acc,
            test_auc = m.test_auc,
            val_acc = m.val_acc,
            "evaluated"
        );
        let file = self.dirs.out.join("metrics.csv");
        ops::metrics_file::append(&file, &m)
            .with_context(|| format!("cannot write {}", file.display()))?;
        link.send(round, Body::Federation(FederationMsg::Metrics(m.clone())))
            .await?;
        let epsilon = self.privacy.as_ref().map(|p| p.plan.epsilon_after(round));
        self.metrics.reported(&m, epsilon);
        Ok(())
    }
}
