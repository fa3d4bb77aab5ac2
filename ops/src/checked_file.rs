//! State files whose damage is told apart from their content: `HEALchk1`, the BLAKE3 hash of
//! the payload, then the payload, written through [`durable_file`](crate::durable_file). A
//! flipped bit or a cut file is refused with its path, never decoded into a wrong model (a
//! postcard float has no invalid bit patterns: without the hash, a hospital would train on a
//! damaged global model and say nothing). Files written before the header existed are read as
//! they are and gain it at their next write.

use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"HEALchk1";
const HEADER: usize = MAGIC.len() + 32;

#[derive(Debug, thiserror::Error)]
pub enum CheckedError {
    #[error(
        "{path} is damaged ({why}): it was changed outside HEAL or its disk failed; it was left as it was — restore it from a backup"
    )]
    Damaged { path: PathBuf, why: &'static str },
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// `payload` with its header.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(blake3::hash(payload).as_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a framed file (checked against its hash), or the whole of a file written
/// before frames.
pub fn unframe(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if !bytes.starts_with(MAGIC) {
        return Ok(bytes);
    }
    if bytes.len() < HEADER {
        return Err("cut short inside its header");
    }
    let (hash, payload) = bytes[MAGIC.len()..].split_at(32);
    if blake3::hash(payload).as_bytes() != hash {
        return Err("its contents do not match their hash");
    }
    Ok(payload)
}

/// Writes `payload` framed, durably, readable by its owner only.
pub fn write_private(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    crate::durable_file::write_private(path, &frame(payload))
}

/// Writes `payload` framed, durably, readable by anyone on the machine.
pub fn write_public(path: &Path, payload: &[u8]) -> std::io::Result<()> {
    crate::durable_file::write_public(path, &frame(payload))
}

/// The checked payload of `path`, or None when there is no such file. The payload is the
/// buffer the file was read into, its header drained in place (no copy of a secret is left
/// behind: a caller that wraps it in `Zeroizing` clears every byte read).
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, CheckedError> {
    match std::fs::read(path) {
        Ok(mut bytes) => match unframe(&bytes) {
            Ok(payload) => {
                let header = bytes.len() - payload.len();
                bytes.drain(..header);
                Ok(Some(bytes))
            }
            Err(why) => Err(CheckedError::Damaged {
                path: path.to_path_buf(),
                why,
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CheckedError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_framed_file_reads_back_and_any_flipped_bit_or_cut_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        let payload: Vec<u8> = (0..300u32).map(|i| (i * 13) as u8).collect();
        write_private(&path, &payload).unwrap();
        assert_eq!(read(&path).unwrap().unwrap(), payload);
        let good = std::fs::read(&path).unwrap();
        // every bit of the hash and the payload
        for byte in MAGIC.len()..good.len() {
            for bit in 0..8 {
                let mut bad = good.clone();
                bad[byte] ^= 1 << bit;
                assert!(unframe(&bad).is_err(), "byte {byte} bit {bit} went unseen");
            }
        }
        for cut in [good.len() - 1, HEADER, HEADER - 1, MAGIC.len() + 3] {
            assert!(unframe(&good[..cut]).is_err(), "cut at {cut} went unseen");
        }
        std::fs::write(&path, &good[..good.len() - 5]).unwrap();
        let err = read(&path).unwrap_err().to_string();
        assert!(err.contains("state.bin is damaged"), "{err}");
        assert!(read(&dir.path().join("none.bin")).unwrap().is_none());
    }

    #[test]
    fn a_file_written_before_frames_is_read_as_it_is() {
        let legacy = b"\x03\x02abc".to_vec();
        assert_eq!(unframe(&legacy).unwrap(), legacy.as_slice());
    }
}
