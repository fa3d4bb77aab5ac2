//! The node's own record of its rounds: `metrics.csv` in its output directory, one row per
//! round, the same figures it reports to the coordinator.

use std::path::Path;

use anyhow::Context;
use protocol::message::RoundMetrics;

pub(super) fn append_metrics(path: &Path, m: &RoundMetrics) -> anyhow::Result<()> {
    use std::io::Write;
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    if new {
        writeln!(
            f,
            "round,train_loss,val_loss,val_acc,val_auc,test_acc,test_auc,samples,train_s,encrypt_s,upload_s,switch_s,decrypt_s,bytes_up,bytes_down"
        )?;
    }
    writeln!(
        f,
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
    )?;
    Ok(())
}
