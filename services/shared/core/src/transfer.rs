//! The data pipeline both ends share: a blocking thread reads (or writes) the
//! file and hashes in the same pass, while the async side moves bytes over
//! the socket; a bounded channel between them caps memory at a few chunks.

use std::fs::File;
use std::io::{Read, Write};

use crate::md5::Md5;
use bytes::Bytes;
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
    /// When to write straight to the disk, past the page cache.
    pub direct: Direct,
}

/// When [`write_and_hash`] writes past the page cache (`O_DIRECT`), where
/// the file system can.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direct {
    /// Never.
    Never,
    /// Always: for data that is synced before anyone is answered, so the
    /// disk is waited for either way.
    Always,
    /// While the disk keeps well ahead of the transfer: once direct writes
    /// have taken more than half the time since the first byte (judged
    /// after [`JUDGED_AFTER`] bytes), the rest goes through the page cache,
    /// so a slow disk does not slow a download nobody asked to be synced.
    WhileAhead,
}

/// Bytes written directly before [`Direct::WhileAhead`] judges the disk.
pub const JUDGED_AFTER: u64 = 16 * 1024 * 1024;

/// Whether a disk that spent `disk` of the `all` since a transfer's first
/// byte in direct writes keeps well ahead of it.
fn keeps_ahead(disk: std::time::Duration, all: std::time::Duration) -> bool {
    disk * 2 <= all
}

/// Writes every chunk from `rx` to `file`, hashing it into `hasher`, until
/// the sender is dropped. Returns the file, the hasher and the byte count.
/// Runs on a blocking thread.
pub fn write_and_hash(
    file: File,
    hasher: Md5,
    mode: WriteMode,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<(File, Md5, u64)> {
    let mut hasher = Hashing::new(hasher, mode.hash_apart);
    let mut sink = Sink::new(file, mode.durable, mode.direct)?;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        sink.write(&chunk)?;
    }
    let (file, written) = sink.finish()?;
    Ok((file, hasher.finish()?, written))
}

/// Alignment of direct writes: the file offset, the length and the memory
/// of each. 4 KiB suits every block device's logical block size short of
/// the rare 8 KiB or larger ones (which refuse, and the sink falls back).
const ALIGN: usize = 4096;

/// Bytes gathered before each direct write.
const DIRECT_BLOCK: usize = 1024 * 1024;

/// Where a transfer's bytes go. Data that must be durable anyway goes
/// straight to the disk (`O_DIRECT`) in aligned blocks of [`DIRECT_BLOCK`]:
/// the page cache's copy of every page and its writeback cost the server
/// more CPU than decrypting the upload (dd of 1 GiB with `fdatasync`: 1.3 to
/// 1.6 s of system time through the page cache, 0.4 to 0.7 s direct, on
/// this project's machine), and a durable write waits for the disk either
/// way. The unaligned head of a resumed file and the tail go through the
/// page cache (the final sync covers them), and so does everything where
/// the file system has no direct I/O. A download nobody asked to be synced
/// goes direct while the disk keeps well ahead ([`Direct::WhileAhead`]):
/// on this machine that left the page cache's copy off the client's two
/// cores (a 1 GiB get took 1.51-1.55 s against 1.62-1.85 s). Data written
/// through the page cache and synced at the end is synced early in the
/// background as it goes.
struct Sink {
    file: File,
    written: u64,
    /// Bytes written through the page cache (for the early flushes).
    buffered: u64,
    durable: bool,
    /// Bytes still to write through the page cache before the file offset
    /// is aligned.
    head: usize,
    /// The aligned block being gathered while direct I/O is on.
    direct: Option<DirectBlock>,
    /// Whether the disk is judged ([`Direct::WhileAhead`]).
    judged: bool,
    began: std::time::Instant,
    /// Time spent in direct writes, and their bytes.
    disk_time: std::time::Duration,
    disk_bytes: u64,
    flusher: Option<EarlyFlush>,
}

/// An aligned block of [`DIRECT_BLOCK`] bytes inside a larger allocation.
struct DirectBlock {
    memory: Vec<u8>,
    start: usize,
    filled: usize,
}

impl Sink {
    fn new(mut file: File, durable: bool, mode: Direct) -> std::io::Result<Sink> {
        use std::io::Seek;
        let direct = mode != Direct::Never;
        let head = if direct {
            let at = file.stream_position()?;
            (ALIGN - (at % ALIGN as u64) as usize) % ALIGN
        } else {
            0
        };
        let mut sink = Sink {
            file,
            written: 0,
            buffered: 0,
            durable,
            head,
            direct: None,
            judged: mode == Direct::WhileAhead,
            began: std::time::Instant::now(),
            disk_time: std::time::Duration::ZERO,
            disk_bytes: 0,
            flusher: None,
        };
        if direct && head == 0 {
            sink.go_direct();
        }
        Ok(sink)
    }

    /// Turns direct I/O on, if the file system has it.
    fn go_direct(&mut self) {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let on = fcntl_getfl(&self.file)
            .and_then(|flags| fcntl_setfl(&self.file, flags | OFlags::DIRECT));
        if on.is_ok() {
            let memory = vec![0u8; DIRECT_BLOCK + ALIGN];
            let start = memory.as_ptr().align_offset(ALIGN).min(ALIGN);
            self.direct = Some(DirectBlock {
                memory,
                start,
                filled: 0,
            });
        }
    }

    /// Turns direct I/O off (the rest goes through the page cache).
    fn go_buffered(&mut self) -> std::io::Result<()> {
        use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
        let flags = fcntl_getfl(&self.file)?;
        fcntl_setfl(&self.file, flags - OFlags::DIRECT)?;
        Ok(())
    }

    fn write(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        self.written += data.len() as u64;
        if self.head > 0 {
            let n = self.head.min(data.len());
            self.file.write_all(&data[..n])?;
            self.head -= n;
            data = &data[n..];
            if self.head == 0 {
                self.go_direct();
            }
        }
        if self.direct.is_none() {
            return self.write_buffered(data);
        }
        while let Some(block) = &mut self.direct {
            if data.is_empty() {
                break;
            }
            let at = block.start + block.filled;
            let n = (DIRECT_BLOCK - block.filled).min(data.len());
            block.memory[at..at + n].copy_from_slice(&data[..n]);
            block.filled += n;
            data = &data[n..];
            if block.filled == DIRECT_BLOCK {
                self.write_block(DIRECT_BLOCK)?;
            }
        }
        // Direct I/O refused midway: the rest goes through the page cache.
        self.write_buffered(data)
    }

    /// Writes the first `len` bytes of the gathered block (a multiple of
    /// [`ALIGN`]) directly; keeps what follows them.
    fn write_block(&mut self, len: usize) -> std::io::Result<()> {
        let Some(block) = self.direct.take() else {
            return Ok(());
        };
        let bytes = &block.memory[block.start..block.start + block.filled];
        let mut done = 0;
        let mut direct = true;
        let started = std::time::Instant::now();
        while done < len {
            match self.file.write(&bytes[done..len]) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // An alignment this device does not take, or a short write
                // that left the offset unaligned: page cache from here on.
                Err(e)
                    if direct
                        && e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error()) =>
                {
                    self.go_buffered()?;
                    direct = false;
                }
                Err(e) => return Err(e),
            }
            if direct && done % ALIGN != 0 {
                self.go_buffered()?;
                direct = false;
            }
        }
        self.disk_time += started.elapsed();
        self.disk_bytes += len as u64;
        if direct
            && self.judged
            && self.disk_bytes >= JUDGED_AFTER
            && !keeps_ahead(self.disk_time, self.began.elapsed())
        {
            self.go_buffered()?;
            direct = false;
        }
        let rest = &bytes[len..];
        if !direct {
            let rest = rest.to_vec();
            return self.file.write_all(&rest);
        }
        let kept = rest.len();
        let mut block = block;
        block
            .memory
            .copy_within(block.start + len..block.start + block.filled, block.start);
        block.filled = kept;
        self.direct = Some(block);
        Ok(())
    }

    fn write_buffered(&mut self, data: &[u8]) -> std::io::Result<()> {
        if data.is_empty() {
            return Ok(());
        }
        let before = self.buffered;
        self.file.write_all(data)?;
        self.buffered += data.len() as u64;
        if self.durable && self.buffered / FLUSH_EVERY != before / FLUSH_EVERY {
            if self.flusher.is_none() {
                self.flusher = EarlyFlush::start(&self.file);
            }
            if let Some(f) = &self.flusher {
                f.kick();
            }
        }
        Ok(())
    }

    /// Writes what is gathered (the aligned part directly, the tail through
    /// the page cache) and returns the file, direct I/O off, and the count.
    fn finish(mut self) -> std::io::Result<(File, u64)> {
        if let Some(block) = &self.direct {
            let aligned = block.filled - block.filled % ALIGN;
            self.write_block(aligned)?;
        }
        if let Some(block) = self.direct.take() {
            self.go_buffered()?;
            let tail = &block.memory[block.start..block.start + block.filled];
            self.file.write_all(tail)?;
        }
        if let Some(f) = self.flusher.take() {
            f.stop();
        }
        Ok((self.file, self.written))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_writes_every_byte_in_place_from_any_offset() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("wharf-sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data: Vec<u8> = (0..3 * DIRECT_BLOCK as u32 + 12_345)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        // Resumed at aligned and unaligned offsets, fed in pieces that
        // straddle the blocks, durable (direct) and not.
        for (at, piece, mode) in [
            (0usize, 256 * 1024, Direct::Always),
            (0, 1000, Direct::Always),
            (4096, 77_777, Direct::WhileAhead),
            (5000, 256 * 1024, Direct::Always),
            (123, 1, Direct::Always),
            (70_000, 100_000, Direct::Never),
        ] {
            let durable = mode == Direct::Always;
            let path = dir.join(format!("f{at}-{piece}-{mode:?}"));
            std::fs::write(&path, &data[..at])?;
            let mut file = std::fs::OpenOptions::new().write(true).open(&path)?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(at as u64))?;
            let mut sink = Sink::new(file, durable, mode)?;
            let rest = if piece == 1 {
                &data[at..at + 9000]
            } else {
                &data[at..]
            };
            for part in rest.chunks(piece) {
                sink.write(part)?;
            }
            let (file, written) = sink.finish()?;
            file.sync_all()?;
            drop(file);
            assert_eq!(written, rest.len() as u64, "count for {at}/{piece}");
            let back = std::fs::read(&path)?;
            assert!(
                back == data[..at + rest.len()],
                "content for {at}/{piece}/{durable}"
            );
        }
        std::fs::remove_dir_all(&dir)
    }

    #[test]
    fn a_slow_disk_hands_the_rest_to_the_page_cache_midway() -> std::io::Result<()> {
        let dir = std::env::temp_dir().join(format!("wharf-slow-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let data: Vec<u8> = (0..3 * DIRECT_BLOCK as u32 + 999)
            .map(|i| (i.wrapping_mul(2_246_822_519) >> 9) as u8)
            .collect();
        let path = dir.join("slow");
        let file = std::fs::File::create(&path)?;
        let mut sink = Sink::new(file, false, Direct::WhileAhead)?;
        let direct_at_first = sink.direct.is_some();
        // As if the disk had already spent an hour on 16 MiB.
        sink.disk_time = std::time::Duration::from_secs(3600);
        sink.disk_bytes = JUDGED_AFTER;
        for part in data.chunks(300_000) {
            sink.write(part)?;
        }
        let left = sink.direct.is_none();
        let (file, written) = sink.finish()?;
        drop(file);
        assert_eq!(written, data.len() as u64);
        assert!(std::fs::read(&path)? == data, "content");
        std::fs::remove_dir_all(&dir)?;
        if direct_at_first {
            assert!(left, "still direct after a slow block");
        }
        Ok(())
    }

    #[test]
    fn a_disk_taking_over_half_the_time_is_left_for_the_page_cache() {
        use std::time::Duration;
        let ms = Duration::from_millis;
        assert!(keeps_ahead(ms(300), ms(1000)));
        assert!(keeps_ahead(ms(500), ms(1000)));
        assert!(!keeps_ahead(ms(501), ms(1000)));
        assert!(!keeps_ahead(ms(990), ms(1000)));
    }

    #[test]
    fn md5_matches_the_reference_values() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            md5_hex(b"The quick brown fox jumps over the lazy dog"),
            "9e107d9d372bb6826bd81d3542a419d6"
        );
    }
}
