//! The data pipeline both ends share: a blocking thread reads (or writes) the
//! file and hashes in the same pass, while the async side moves bytes over
//! the socket; a bounded channel between them caps memory at a few chunks.

use std::fs::File;
use std::io::{Read, Write};

use bytes::Bytes;
use md5::{Digest, Md5};
use tokio::sync::mpsc;

/// Bytes per chunk on the data path.
pub(crate) const CHUNK: usize = 256 * 1024;

/// Chunks in flight between the file thread and the socket: 1 MiB.
pub(crate) const DEPTH: usize = 4;

/// Lowercase hex md5 of `data`.
pub fn md5_hex(data: &[u8]) -> String {
    let mut h = Md5::new();
    h.update(data);
    hex(h)
}

pub(crate) fn hex(hasher: Md5) -> String {
    let digest = hasher.finalize();
    let mut out = String::with_capacity(32);
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Hashes the first `len` bytes of `file` (from its current position),
/// returning the running hasher so a transfer can continue from there.
pub(crate) fn hash_prefix(file: &mut File, len: u64) -> std::io::Result<Md5> {
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

/// Reads exactly `len` bytes from `file`, hashing them into `hasher` and
/// sending them down `tx` in chunks. Stops early (Ok) if the receiver is
/// gone. Runs on a blocking thread.
pub(crate) fn read_and_hash(
    mut file: File,
    mut hasher: Md5,
    len: u64,
    tx: mpsc::Sender<Bytes>,
) -> std::io::Result<Md5> {
    let mut left = len;
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let mut buf = vec![0u8; want];
        file.read_exact(&mut buf)?;
        hasher.update(&buf);
        left -= want as u64;
        if tx.blocking_send(Bytes::from(buf)).is_err() {
            break;
        }
    }
    Ok(hasher)
}

/// Writes every chunk from `rx` to `file`, hashing it into `hasher`, until
/// the sender is dropped. Returns the file, the hasher and the byte count.
/// Runs on a blocking thread.
pub(crate) fn write_and_hash(
    mut file: File,
    mut hasher: Md5,
    mut rx: mpsc::Receiver<Bytes>,
) -> std::io::Result<(File, Md5, u64)> {
    let mut written = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        file.write_all(&chunk)?;
        written += chunk.len() as u64;
    }
    Ok((file, hasher, written))
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
