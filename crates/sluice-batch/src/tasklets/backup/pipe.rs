//! Streaming zstd compression with a SHA-256 of what is stored, on a blocking
//! thread of its own (compression is CPU work; the dump arrives on the async
//! side in chunks through a bounded channel, so memory stays flat), and the
//! way back: checking and decompressing a stored artifact chunk by chunk.

use std::io::{self, Write};
use std::path::PathBuf;

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::mpsc;

/// Size of the chunks read from a dump.
const CHUNK: usize = 256 * 1024;

/// What a finished compression wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Written {
    /// Bytes in.
    pub(crate) raw: u64,
    /// Bytes stored.
    pub(crate) compressed: u64,
    /// SHA-256 of the stored bytes, hex.
    pub(crate) sha256: String,
}

/// A writer that hashes and counts what goes through it.
struct Hashing<W> {
    inner: W,
    hash: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Compresses chunks into a file on a blocking thread.
pub(crate) struct Compressor {
    tx: Option<mpsc::Sender<Vec<u8>>>,
    done: tokio::task::JoinHandle<io::Result<Written>>,
}

impl Compressor {
    /// Starts compressing into a new file at `path` with zstd `level`.
    pub(crate) fn start(path: PathBuf, level: i32) -> Self {
        let (tx, mut rx) = mpsc::channel::<Vec<u8>>(8);
        let done = tokio::task::spawn_blocking(move || {
            let file = std::fs::File::create(&path)?;
            let out = Hashing {
                inner: io::BufWriter::new(file),
                hash: Sha256::new(),
                n: 0,
            };
            let mut enc = zstd::stream::write::Encoder::new(out, level)?;
            let mut raw = 0u64;
            while let Some(chunk) = rx.blocking_recv() {
                raw += chunk.len() as u64;
                enc.write_all(&chunk)?;
            }
            let mut out = enc.finish()?;
            out.flush()?;
            let file = out.inner.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            Ok(Written {
                raw,
                compressed: out.n,
                sha256: hex::encode(out.hash.finalize()),
            })
        });
        Self { tx: Some(tx), done }
    }

    /// Compresses everything `r` gives, to its end.
    pub(crate) async fn read_from<R: AsyncRead + Unpin>(&mut self, mut r: R) -> io::Result<()> {
        loop {
            let mut buf = vec![0u8; CHUNK];
            let n = r.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            buf.truncate(n);
            let Some(tx) = &self.tx else {
                return Err(io::Error::other("the compressor is finished"));
            };
            if tx.send(buf).await.is_err() {
                // The thread stopped (a write failed): its error comes from finish.
                return Ok(());
            }
        }
    }

    /// Ends the stream and waits for the file.
    pub(crate) async fn finish(mut self) -> io::Result<Written> {
        drop(self.tx.take());
        self.done.await.map_err(io::Error::other)?
    }
}

/// Checks and decompresses a stored artifact fed in chunks: its SHA-256 and
/// size, and that it is one whole zstd stream. The decompressed bytes go to `W`.
pub(crate) struct Unpacker<W: Write> {
    dec: zstd::stream::write::Decoder<'static, Counting<W>>,
    hash: Sha256,
    n: u64,
}

/// A writer that counts what goes through it.
pub(crate) struct Counting<W> {
    inner: W,
    n: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What an [`Unpacker`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unpacked<W> {
    /// The decompressed bytes' sink.
    pub(crate) out: W,
    /// Bytes decompressed.
    pub(crate) raw: u64,
    /// Bytes of the artifact.
    pub(crate) compressed: u64,
    /// SHA-256 of the artifact, hex.
    pub(crate) sha256: String,
}

impl<W: Write> Unpacker<W> {
    /// Decompresses into `out`.
    pub(crate) fn new(out: W) -> io::Result<Self> {
        Ok(Self {
            dec: zstd::stream::write::Decoder::new(Counting { inner: out, n: 0 })?,
            hash: Sha256::new(),
            n: 0,
        })
    }

    /// One chunk of the artifact.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> io::Result<()> {
        self.hash.update(chunk);
        self.n += chunk.len() as u64;
        self.dec.write_all(chunk)
    }

    /// The end of the artifact. An error when the zstd stream is cut short
    /// (it does not end on a complete frame) or empty.
    pub(crate) fn finish(self) -> io::Result<Unpacked<W>> {
        if self.n == 0 {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "empty artifact"));
        }
        let mut inner = self.dec.finish()?;
        inner.flush()?;
        Ok(Unpacked {
            raw: inner.n,
            out: inner.inner,
            compressed: self.n,
            sha256: hex::encode(self.hash.finalize()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn compressed_artifacts_unpack_to_what_went_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.zst");
        let data: Vec<u8> = (0..1_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let mut c = Compressor::start(path.clone(), 3);
        c.read_from(&data[..]).await.unwrap();
        let w = c.finish().await.unwrap();
        assert_eq!(w.raw, data.len() as u64);
        let stored = std::fs::read(&path).unwrap();
        assert_eq!(w.compressed, stored.len() as u64);
        let mut u = Unpacker::new(Vec::new()).unwrap();
        for chunk in stored.chunks(1000) {
            u.push(chunk).unwrap();
        }
        let got = u.finish().unwrap();
        assert_eq!(got.out, data);
        assert_eq!(got.sha256, w.sha256);
        assert_eq!(got.raw, w.raw);
    }
}
