//! `coordinator`: the consortium server. Provisioning, rounds and `simulate` arrive with the
//! federation issue; until then this binary only says so.

fn main() -> anyhow::Result<()> {
    anyhow::bail!("the coordinator has no commands yet: see the open issues in the README")
}
