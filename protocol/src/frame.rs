//! Length-prefixed frames: a 4-byte little-endian length, then that many bytes. The length is
//! checked against the limit before any buffer is allocated.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::ProtocolError;

/// Largest frame: a key-switching key share of the inference preset (≈ 7 MB) with room.
pub const MAX_FRAME: usize = 32 << 20;

/// What a frame's buffer starts at before its bytes arrive.
const INITIAL_CAPACITY: usize = 64 << 10;

/// Reads one frame; `None` when the stream ends cleanly before a frame starts.
pub async fn read_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..]).await.map_err(io_error)?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(ProtocolError::Truncated)
            };
        }
        got += n;
    }
    let size = u32::from_le_bytes(len) as usize;
    if size > limit {
        return Err(ProtocolError::FrameTooLarge { size, limit });
    }
    // the buffer grows with the bytes that arrive, not with the size a peer declares: a
    // header of 32 MiB followed by nothing costs nothing
    let mut buf = Vec::with_capacity(size.min(INITIAL_CAPACITY));
    r.take(size as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(io_error)?;
    if buf.len() != size {
        return Err(ProtocolError::Truncated);
    }
    Ok(Some(buf))
}

pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    payload: &[u8],
) -> Result<(), ProtocolError> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&l| (l as usize) <= MAX_FRAME)
        .ok_or(ProtocolError::FrameTooLarge {
            size: payload.len(),
            limit: MAX_FRAME,
        })?;
    w.write_all(&len.to_le_bytes()).await.map_err(io_error)?;
    w.write_all(payload).await.map_err(io_error)?;
    Ok(())
}

/// An I/O error of a QUIC stream, keeping why the connection ended (quinn wraps its stream
/// errors in `io::Error`), so a peer's "finished" close is told apart from a failure.
fn io_error(e: std::io::Error) -> ProtocolError {
    let text = e.to_string();
    match e
        .into_inner()
        .map(|inner| inner.downcast::<quinn::ReadError>())
    {
        Some(Ok(r)) => match *r {
            quinn::ReadError::ConnectionLost(c) => c.into(),
            other => ProtocolError::Connection(other.to_string()),
        },
        Some(Err(inner)) => match inner.downcast::<quinn::WriteError>() {
            Ok(w) => (*w).into(),
            Err(_) => ProtocolError::Connection(text),
        },
        None => ProtocolError::Connection(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        write_frame(&mut buf, b"").await.unwrap();
        let mut r = buf.as_slice();
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"hello");
        assert_eq!(read_frame(&mut r, 16).await.unwrap().unwrap(), b"");
        assert!(read_frame(&mut r, 16).await.unwrap().is_none());
        // a declared size above the limit is refused before allocating
        let mut big = (u32::MAX).to_le_bytes().to_vec();
        big.extend_from_slice(b"xx");
        assert!(matches!(
            read_frame(&mut big.as_slice(), MAX_FRAME).await,
            Err(ProtocolError::FrameTooLarge { .. })
        ));
        // truncated length and truncated body
        assert!(matches!(
            read_frame(&mut [1u8, 0].as_slice(), 16).await,
            Err(ProtocolError::Truncated)
        ));
        assert!(matches!(
            read_frame(&mut [5u8, 0, 0, 0, 1].as_slice(), 16).await,
            Err(ProtocolError::Truncated)
        ));
    }
}
