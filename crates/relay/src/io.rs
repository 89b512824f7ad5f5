//! Reading and writing one relay frame on a QUIC stream, with the size
//! checked before anything is allocated and every step bounded in time.

use std::time::Duration;

use duet_sync::proto::frame::Frame;
use duet_sync::proto::relay::announced;
use duet_sync::proto::wire::WireError;

/// How long the first bytes of a frame may take.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The slowest average rate a large frame may arrive or leave at (64 KiB/s):
/// a frame of `n` bytes gets [`READ_TIMEOUT`] plus `n / MIN_RATE` seconds.
pub(crate) const MIN_RATE: usize = 64 * 1024;

/// Why a frame was not read.
#[derive(Debug)]
pub(crate) enum ReadFail {
    /// The header announces an impossible frame.
    Wire(WireError),
    /// The other side was too slow.
    TimedOut,
    /// The stream ended before a whole frame.
    Ended,
    /// The stream or connection broke.
    Broken(String),
}

impl std::fmt::Display for ReadFail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadFail::Wire(e) => write!(f, "{e}"),
            ReadFail::TimedOut => f.write_str("timed out"),
            ReadFail::Ended => f.write_str("the stream ended in the middle of a frame"),
            ReadFail::Broken(e) => f.write_str(e),
        }
    }
}

/// The time allowed to move `len` bytes.
pub(crate) fn allowance(len: usize) -> Duration {
    READ_TIMEOUT + Duration::from_secs((len / MIN_RATE) as u64)
}

fn read_fail(e: quinn::ReadExactError) -> ReadFail {
    match e {
        quinn::ReadExactError::FinishedEarly(_) => ReadFail::Ended,
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => {
            ReadFail::Broken(duet_sync::net::driver::connection_error(&c).to_string())
        }
        quinn::ReadExactError::ReadError(e) => ReadFail::Broken(e.to_string()),
    }
}

/// Reads exactly `buf.len()` bytes within `within`.
pub(crate) async fn read_exact(
    recv: &mut quinn::RecvStream,
    buf: &mut [u8],
    within: Duration,
) -> Result<(), ReadFail> {
    match tokio::time::timeout(within, recv.read_exact(buf)).await {
        Ok(r) => r.map_err(read_fail),
        Err(_) => Err(ReadFail::TimedOut),
    }
}

/// Reads a frame's header within `within` and checks its length.
pub(crate) async fn read_len(recv: &mut quinn::RecvStream, within: Duration) -> Result<usize, ReadFail> {
    let mut header = [0u8; 4];
    read_exact(recv, &mut header, within).await?;
    announced(header).map_err(ReadFail::Wire)
}

/// Reads the rest of a frame of `len` bytes (type byte and payload) of which
/// `start` came already.
pub(crate) async fn read_rest(
    recv: &mut quinn::RecvStream,
    len: usize,
    start: &[u8],
) -> Result<Frame, ReadFail> {
    let Some((&kind, head)) = start.split_first() else {
        return Err(ReadFail::Wire(WireError::Malformed("empty frame")));
    };
    let mut payload = vec![0u8; len - 1];
    payload[..head.len()].copy_from_slice(head);
    read_exact(recv, &mut payload[head.len()..], allowance(len)).await?;
    Ok(Frame { kind, payload })
}

/// Reads one whole frame; its header must start within `first`.
pub(crate) async fn read_frame(recv: &mut quinn::RecvStream, first: Duration) -> Result<Frame, ReadFail> {
    let len = read_len(recv, first).await?;
    let mut kind = [0u8; 1];
    read_exact(recv, &mut kind, READ_TIMEOUT).await?;
    read_rest(recv, len, &kind).await
}

/// Writes `bytes` and finishes the stream, within the time they deserve.
pub(crate) async fn write_and_finish(send: &mut quinn::SendStream, bytes: &[u8]) -> Result<(), String> {
    let wrote = match tokio::time::timeout(allowance(bytes.len()), send.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(quinn::WriteError::ConnectionLost(c))) => {
            Err(duet_sync::net::driver::connection_error(&c).to_string())
        }
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    let _ = send.finish();
    wrote
}
