//! Files that survive a crash or a power cut whole: written to a fresh temporary file beside the
//! target (its mode set on the open file, so a leftover temporary can never lend a secret its
//! mode), synced, renamed over the target, and the directory synced so the rename itself is
//! durable. A reader sees the old file or the new one, never a part.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Only the owner reads and writes: keys, served state, model state.
pub const PRIVATE: u32 = 0o600;
/// Anyone on the machine reads: public keys, reports.
pub const PUBLIC: u32 = 0o644;

/// Writes `bytes` to `path` durably with permission bits `mode` (Unix; ignored elsewhere).
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, mut file) = fresh_temporary(path)?;
    let written = (|| {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        #[cfg(not(unix))]
        let _ = mode;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written?;
    sync_dir(&dir)
}

/// [`write`] with mode [`PRIVATE`].
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, PRIVATE)
}

/// [`write`] with mode [`PUBLIC`].
pub fn write_public(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write(path, bytes, PUBLIC)
}

/// Creates `dir` (and its parents) and makes it readable by its owner only (0700).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// A temporary file beside `path` that did not exist before (created exclusively, 0600 from
/// the start), so two writers never share one and a stale one is never reused.
fn fresh_temporary(path: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut seed = [0u8; 8];
    for attempt in 0u32..16 {
        temporary_tag(&mut seed, attempt);
        let tmp = path.with_file_name(format!(".{name}.{:016x}.tmp", u64::from_le_bytes(seed)));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        match opts.open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        format!("no free temporary name beside {}", path.display()),
    ))
}

/// A name for a temporary file: unpredictable enough not to collide (not a secret).
fn temporary_tag(out: &mut [u8; 8], attempt: u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let h = blake3::hash(
        &[
            now.to_le_bytes().as_slice(),
            &std::process::id().to_le_bytes(),
            &attempt.to_le_bytes(),
        ]
        .concat(),
    );
    out.copy_from_slice(&h.as_bytes()[..8]);
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_secret_is_0600_even_over_a_leftover_world_readable_file_and_no_temporary_stays() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("consortium-receive.key");
        // what the old code left: a 0644 temporary shared by .key and .pub, and a 0644 target
        std::fs::write(dir.path().join("consortium-receive.tmp"), b"old").unwrap();
        std::fs::write(&key, b"old").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&key, b"secret").unwrap();
        assert_eq!(std::fs::read(&key).unwrap(), b"secret");
        assert_eq!(mode(&key), 0o600);
        write_public(&dir.path().join("consortium-receive.pub"), b"public").unwrap();
        assert_eq!(mode(&dir.path().join("consortium-receive.pub")), 0o644);
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with('.')),
            "a temporary was left: {names:?}"
        );
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_whole() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("state.bin");
        write_private(&target, b"round 3").unwrap();
        // a directory where the file should be renamed to: the rename fails, nothing changes
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write_private(&blocked, b"round 4").is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"round 3");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn private_directories_are_0700() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("out/state");
        create_private_dir(&state).unwrap();
        assert_eq!(mode(&state), 0o700);
    }
}
