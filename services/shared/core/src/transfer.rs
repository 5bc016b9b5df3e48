//! The data pipeline both ends share: a blocking thread reads (or writes) the
//! file and hashes in the same pass, while the async side moves bytes over
//! the socket; a bounded channel between them caps memory at a few chunks.

use std::fs::File;
use std::io::{Read, Write};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::mpsc;

/// Bytes per chunk on the data path.
pub const CHUNK: usize = 256 * 1024;

/// Chunks in flight between the file thread and the socket: 1 MiB.
pub const DEPTH: usize = 4;

/// Lowercase hex md5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(data);
    hex(h)
}

/// Lowercase hex of what `hasher` has hashed.
pub fn hex(hasher: Md5) -> String {
    use std::fmt::Write;
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for b in digest.iter() {
        let _ = write!(out, "{b:02x}"); // writing to a String cannot fail
    }
    out
}

/// Hashes the first `len` bytes of `file` (from its current position),
/// returning the running hasher so a transfer can continue from there.
pub fn hash_prefix(file: &mut File, len: u64) -> std::io::Result<Md5> {
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the file is shorter than expected",
            ));
        }
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Ok(hasher)
}

/// Reads exactly `len` bytes from `file`, hashing them into `hasher` (if
/// the md5 is wanted) and sending them down `tx` in chunks. Stops early
/// (Ok) if the receiver is gone. Runs on a blocking thread.
pub fn read_and_hash(
    mut file: File,
    mut hasher: Option<Md5>,
    len: u64,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<Option<Md5>> {
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact(&mut buf)?;
        if let Some(h) = &mut hasher {
            h.update(&buf);
        }
        left -= want as u64;
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            break;
        }
    }
    Ok(hasher)
}

/// An md5 computed in line, or on a thread of its own beside the one
/// moving the file's bytes (fed the same chunks in the same order): md5 is
/// the slowest stage of a transfer, and apart, the file I/O overlaps it
/// instead of adding to it.
enum Hashing {
    Inline(Md5),
    Apart {
        tx: std::sync::mpsc::SyncSender<Bytes>,
        thread: std::thread::JoinHandle<Md5>,
    },
}

impl Hashing {
    /// Continues `hasher`, on a thread of its own if `apart`.
    fn new(hasher: Md5, apart: bool) -> Hashing {
        if !apart {
            return Hashing::Inline(hasher);
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Bytes>(DEPTH);
        let kept = hasher.clone();
        let spawned = std::thread::Builder::new()
            .name("wharf-md5".into())
            .spawn(move || {
                let mut hasher = hasher;
                while let Ok(chunk) = rx.recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
        match spawned {
            Ok(thread) => Hashing::Apart { tx, thread },
            // No thread to spare: hash in line.
            Err(_) => Hashing::Inline(kept),
        }
    }

    fn update(&mut self, chunk: &Bytes) {
        match self {
            Hashing::Inline(h) => h.update(chunk),
            Hashing::Apart { tx, .. } => {
                // The thread ends only when the sender is dropped.
                let _ = tx.send(chunk.clone());
            }
        }
    }

    fn finish(self) -> std::io::Result<Md5> {
        match self {
            Hashing::Inline(h) => Ok(h),
            Hashing::Apart { tx, thread } => {
                drop(tx);
                thread
                    .join()
                    .map_err(|_| std::io::Error::other("the md5 thread failed"))
            }
        }
    }
}

/// Bytes written between two early flushes.
const FLUSH_EVERY: u64 = 64 * 1024 * 1024;

/// Syncs a file's data to disk in the background while it is being written,
/// so the disk works during the transfer instead of after it, and the final
/// sync before publishing has at most [`FLUSH_EVERY`] bytes left to do: on a
/// slow disk, a 1 GiB upload's acknowledgement does not wait for the whole
/// gigabyte to reach the platter after the last byte arrived. Started only
/// once a file passes [`FLUSH_EVERY`] bytes: small files never pay for it.
struct EarlyFlush {
    kick: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl EarlyFlush {
    fn start(file: &File) -> Option<EarlyFlush> {
        let handle = file.try_clone().ok()?;
        let (kick, wait) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("wharf-flush".into())
            .spawn(move || {
                while wait.recv().is_ok() {
                    // Best effort: the final sync reports any real failure.
                    let _ = handle.sync_data();
                }
            })
            .ok()?;
        Some(EarlyFlush { kick, thread })
    }

    fn kick(&self) {
        // A flush already pending covers this one too.
        let _ = self.kick.try_send(());
    }

    fn stop(self) {
        drop(self.kick);
        let _ = self.thread.join();
    }
}

/// Bodies from this size on are hashed apart from their writing: measured
/// on a 2-core machine with both ends on it, a 1 GiB download went from
/// 0.81x to 0.92x the speed of `md5sum`; uploads, bound there by the two
/// ends' hashing on the same cores, neither gained nor lost.
pub const HASH_APART: u64 = 4 * 1024 * 1024;

/// How [`write_and_hash`] treats the data.
#[derive(Debug, Clone, Copy)]
pub struct WriteMode {
    /// Flush the data to disk as it goes (the caller syncs at the end).
    pub durable: bool,
    /// Hash on a thread of its own (worth it for big bodies only).
    pub hash_apart: bool,
}

/// Writes every chunk from `rx` to `file`, hashing it into `hasher`, until
/// the sender is dropped. Returns the file, the hasher and the byte count.
/// Runs on a blocking thread.
pub fn write_and_hash(
    mut file: File,
    hasher: Md5,
    mode: WriteMode,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<(File, Md5, u64)> {
    let durable = mode.durable;
    let mut hasher = Hashing::new(hasher, mode.hash_apart);
    let mut written = 0u64;
    let mut flusher: Option<EarlyFlush> = None;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        let before = written;
        written += chunk.len() as u64;
        if durable && written / FLUSH_EVERY != before / FLUSH_EVERY {
            if flusher.is_none() {
                flusher = EarlyFlush::start(&file);
            }
            if let Some(f) = &flusher {
                f.kick();
            }
        }
    }
    if let Some(f) = flusher {
        f.stop();
    }
    Ok((file, hasher.finish()?, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn md5_matches_the_reference_values() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }
}
