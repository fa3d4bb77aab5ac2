//! MedMNIST v2/v3 (`.npz`): the official catalogue with md5 sums, data-directory resolution,
//! verified download from the official Zenodo record, and a strict reader.
//!
//! Each archive holds `train_images`, `train_labels`, `val_images`, `val_labels`, `test_images`,
//! `test_labels` (uint8). Images are `(n, s, s)` (grey) or `(n, s, s, 3)` (RGB) with `s` one of
//! 28, 64, 128, 224; labels are `(n, 1)` (one class) or `(n, k)` (ChestMNIST's 14 binary labels).
//! The order of the arrays inside the zip differs between files, so they are read by name.
//!
//! Cite: Yang et al., "MedMNIST v2", Scientific Data 10:41 (2023), and each set's source.

use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use md5::{Digest, Md5};

use crate::error::{DatasetError, Result};
use crate::image_set::Dataset;

/// Environment variable naming the data directory.
pub const DATA_DIR_ENV: &str = "HEAL_DATA_DIR";

/// Environment variable that, set to `1`/`true`, forbids downloads (as `offline = true`).
pub const OFFLINE_ENV: &str = "HEAL_OFFLINE";

mod catalog;
mod npz;

pub use catalog::{CATALOG, CatalogEntry, RECORD_URL, SIZES, catalog_entry, expected_counts};
pub use npz::{NpzSpec, read_npz};

/// Where MedMNIST files are looked for: `configured` if given, else `$HEAL_DATA_DIR`, else the
/// per-user cache directory (`~/.cache/heal/medmnist` on Linux).
pub fn resolve_data_dir(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return Ok(p.to_path_buf());
    }
    if let Some(v) = std::env::var_os(DATA_DIR_ENV)
        && !v.is_empty()
    {
        return Ok(PathBuf::from(v));
    }
    dirs::cache_dir()
        .map(|d| d.join("heal").join("medmnist"))
        .ok_or_else(|| {
            DatasetError::invalid(
                "data directory",
                format!("no per-user cache directory is known here; set {DATA_DIR_ENV}"),
            )
        })
}

/// The MedMNIST files of this workspace's tests and examples: `$HEAL_DATA_DIR`, else
/// `../shared/datasets/medmnist` beside the workspace (where a developer's checkout has them).
pub fn workspace_data_dir() -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/medmnist"),
    }
}

/// `name` at 28×28 from [`workspace_data_dir`], offline and without a progress bar.
pub fn load_workspace(name: &str) -> Result<Dataset> {
    load(
        name,
        28,
        &MedMnistOptions {
            data_dir: Some(workspace_data_dir()),
            offline: true,
            progress: false,
            ..MedMnistOptions::default()
        },
    )
}

/// Whether `HEAL_OFFLINE` asks for offline mode.
pub fn offline_from_env() -> bool {
    std::env::var(OFFLINE_ENV)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

/// How to find and check a MedMNIST file.
#[derive(Clone, Debug)]
pub struct MedMnistOptions {
    /// The data directory (`None`: `$HEAL_DATA_DIR`, else the cache directory).
    pub data_dir: Option<PathBuf>,
    /// Never download. `Default` and configs read `HEAL_OFFLINE=1` into it; an explicit value
    /// here is obeyed as given.
    pub offline: bool,
    /// Check the md5 against the official table before reading (default true).
    pub verify_md5: bool,
    /// Base URL of the record (tests point it at a local server).
    pub base_url: String,
    /// Show a progress bar while downloading.
    pub progress: bool,
}

impl Default for MedMnistOptions {
    fn default() -> Self {
        Self {
            data_dir: None,
            offline: offline_from_env(),
            verify_md5: true,
            base_url: RECORD_URL.into(),
            progress: true,
        }
    }
}

/// Finds (downloading if allowed) and checks the file of `name` at `size`; returns its path.
pub fn fetch(name: &str, size: u32, opts: &MedMnistOptions) -> Result<PathBuf> {
    let entry = catalog_entry(name)?;
    let dir = resolve_data_dir(opts.data_dir.as_deref())?;
    let path = dir.join(entry.file_name(size)?);
    let expected = entry.md5_for(size)?;
    let url = entry.url(&opts.base_url, size)?;
    if !path.exists() {
        if opts.offline {
            return Err(DatasetError::MissingOffline { path, url });
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| DatasetError::io(&dir, "create data directory", e))?;
        tracing::info!(%url, path = %path.display(), "downloading MedMNIST file");
        download(&url, &path, Some(expected), opts.progress)?;
        return Ok(path);
    }
    if opts.verify_md5 {
        let found = md5_file(&path)?;
        if found != expected {
            return Err(DatasetError::Md5Mismatch {
                path,
                expected: expected.into(),
                found,
            });
        }
    }
    Ok(path)
}

/// Loads a MedMNIST data set: [`fetch`] then [`read_npz`] with the catalogue's expectations.
pub fn load(name: &str, size: u32, opts: &MedMnistOptions) -> Result<Dataset> {
    let entry = catalog_entry(name)?;
    let path = fetch(name, size, opts)?;
    read_npz(&path, &NpzSpec::from_entry(entry, size))
}

/// The md5 of a file as 32 lowercase hex digits.
pub fn md5_file(path: &Path) -> Result<String> {
    let f = File::open(path).map_err(|e| DatasetError::io(path, "open", e))?;
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = r
            .read(&mut buf)
            .map_err(|e| DatasetError::io(path, "read", e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Downloads `url` to `dest` (through `dest.part`, renamed only when complete and, if
/// `expected_md5` is given, matching). Honours `HTTPS_PROXY`/`NO_PROXY`.
pub fn download(url: &str, dest: &Path, expected_md5: Option<&str>, progress: bool) -> Result<()> {
    let fail = |message: String| DatasetError::Download {
        url: url.into(),
        path: dest.to_path_buf(),
        message,
    };
    let mut builder = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_body(Some(Duration::from_secs(120)));
    // Loopback (tests, local mirrors) never goes through a proxy from the environment.
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', ':']).next())
        .unwrap_or("");
    if matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
        builder = builder.proxy(None);
    }
    let config = builder.build();
    let agent = ureq::Agent::new_with_config(config);
    let resp = agent.get(url).call().map_err(|e| fail(e.to_string()))?;
    let total = resp.body().content_length();
    let mut reader = resp.into_body().into_reader();

    let mut part = dest.as_os_str().to_owned();
    part.push(".part");
    let part = PathBuf::from(part);
    let mut out = File::create(&part).map_err(|e| DatasetError::io(&part, "create", e))?;
    let bar = if progress {
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::new_spinner(),
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(
            dest.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        bar
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut h = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got: u64 = 0;
    let result = (|| -> Result<()> {
        loop {
            let n = reader.read(&mut buf).map_err(|e| fail(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n])
                .map_err(|e| DatasetError::io(&part, "write", e))?;
            got += n as u64;
            bar.set_position(got);
        }
        out.flush()
            .map_err(|e| DatasetError::io(&part, "write", e))?;
        if let Some(t) = total
            && t != got
        {
            return Err(fail(format!("got {got} of {t} bytes")));
        }
        if let Some(expected) = expected_md5 {
            let found = hex(&h.finalize());
            if found != expected {
                return Err(DatasetError::Md5Mismatch {
                    path: dest.to_path_buf(),
                    expected: expected.into(),
                    found,
                });
            }
        }
        Ok(())
    })();
    bar.finish_and_clear();
    drop(out);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&part);
        return Err(e);
    }
    std::fs::rename(&part, dest).map_err(|e| DatasetError::io(dest, "rename into place", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_is_consistent() {
        for e in CATALOG {
            for m in e.md5 {
                assert_eq!(m.len(), 32, "{}", e.name);
                assert!(m.bytes().all(|b| b.is_ascii_hexdigit()));
            }
            assert!(e.num_classes() >= 2);
            assert!(e.channels == 1 || e.channels == 3);
        }
        let org = catalog_entry("OrganAMNIST").unwrap();
        assert_eq!(org.file_name(28).unwrap(), "organamnist.npz");
        assert_eq!(org.file_name(224).unwrap(), "organamnist_224.npz");
        assert_eq!(
            org.url(RECORD_URL, 64).unwrap(),
            "https://zenodo.org/records/10519652/files/organamnist_64.npz?download=1"
        );
        assert!(matches!(
            org.file_name(32),
            Err(DatasetError::UnknownSize { .. })
        ));
        assert!(matches!(
            catalog_entry("mnist"),
            Err(DatasetError::UnknownDataset { .. })
        ));
    }

    #[test]
    fn explicit_data_dir_wins() {
        let p = resolve_data_dir(Some(Path::new("/some/where"))).unwrap();
        assert_eq!(p, PathBuf::from("/some/where"));
    }

    #[test]
    fn md5_of_known_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(md5_file(&p).unwrap(), "900150983cd24fb0d6963f7d28e17f72");
    }
}
