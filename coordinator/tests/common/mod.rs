//! What the integration tests with the real binaries share: the data directory, the binaries,
//! a free port, and child processes that die with the test.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command};

pub fn data_dir() -> PathBuf {
    datasets::medmnist::workspace_data_dir()
}

pub fn coordinator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_coordinator"))
}

/// The hospital node binary, beside the coordinator's (built with it by `cargo test`), or built now.
pub fn client_bin() -> PathBuf {
    let c = coordinator_bin().with_file_name(format!("client{}", std::env::consts::EXE_SUFFIX));
    if !c.exists() {
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap())
            .args(["build", "-p", "client", "--bin", "client"])
            .status()
            .expect("cargo");
        assert!(
            status.success() && c.exists(),
            "cannot build the client binary"
        );
    }
    c
}

/// The data and training sections of the small BreastMNIST federations the tests run: an IID
/// partition, one local epoch per round, no test-split evaluation; `[node]` comes last so a
/// caller may add keys to it.
pub fn breastmnist_sections(seed: u32) -> String {
    format!(
        r#"
[dataset]
kind = "medmnist"
name = "breastmnist"
offline = true

[partition]
scheme = "iid"
seed = {seed}

[train]
epochs = 1
batch_size = 32
lr = 2e-3
schedule = "constant"

[node]
test_every = 0
"#
    )
}

pub fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Child processes that die with the test, whatever way it ends.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
