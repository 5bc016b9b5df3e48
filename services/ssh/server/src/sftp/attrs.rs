//! What SFTP shows of a file: its attributes, the `ls -l` line of a
//! listing, and the file system figures of `statvfs` (the user's quota).

use std::time::UNIX_EPOCH;

use unftp_core::storage::Metadata;
use wharf_ftpd::server::stdftp::Meta;
use wharf_store::User;

const S_IFDIR: u32 = 0o040_000;
const S_IFREG: u32 = 0o100_000;

fn mode_of(meta: &Meta) -> u32 {
    let kind = if meta.is_dir() { S_IFDIR } else { S_IFREG };
    kind | (meta.permissions().0 & 0o7777)
}

fn mtime_of(meta: &Meta) -> u32 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
}

/// A file's attributes.
pub(super) fn attributes_of(meta: &Meta) -> russh_sftp::protocol::FileAttributes {
    let mtime = mtime_of(meta);
    russh_sftp::protocol::FileAttributes {
        size: Some(meta.len()),
        uid: Some(meta.uid()),
        user: None,
        gid: Some(meta.gid()),
        group: None,
        permissions: Some(mode_of(meta)),
        atime: Some(mtime),
        mtime: Some(mtime),
    }
}

/// The `ls -l` line a listing shows for `name`, owned by `owner`.
pub(super) fn long_name(name: &str, meta: &Meta, owner: &str) -> String {
    let mode = mode_of(meta);
    let mut bits = String::with_capacity(10);
    bits.push(if meta.is_dir() { 'd' } else { '-' });
    for shift in [6u32, 3, 0] {
        let three = (mode >> shift) & 0o7;
        bits.push(if three & 4 != 0 { 'r' } else { '-' });
        bits.push(if three & 2 != 0 { 'w' } else { '-' });
        bits.push(if three & 1 != 0 { 'x' } else { '-' });
    }
    let when = jiff::Timestamp::from_second(i64::from(mtime_of(meta)))
        .map(|t| t.strftime("%b %e %H:%M").to_string())
        .unwrap_or_default();
    format!(
        "{bits} 1 {owner:<8} {owner:<8} {:>10} {when} {name}",
        meta.len()
    )
}

/// `statvfs@openssh.com`'s answer: the home as a file system the size of
/// the user's quota (what `df` shows in sftp), blocks of 4 KiB.
pub(super) fn statvfs(user: &User) -> Vec<u8> {
    const BLOCK: u64 = 4096;
    let used = user.used_bytes + user.reserved_bytes;
    // Without a quota: a file system of 2^50 bytes, as good as unbounded.
    let size = user.quota_bytes.unwrap_or(1 << 50);
    let blocks = size / BLOCK;
    let free = size.saturating_sub(used) / BLOCK;
    let files = user.quota_files.unwrap_or(u64::from(u32::MAX));
    let files_free = files.saturating_sub(user.file_count + user.reserved_files);
    let mut out = Vec::with_capacity(11 * 8);
    for n in [
        BLOCK,      // f_bsize
        BLOCK,      // f_frsize
        blocks,     // f_blocks
        free,       // f_bfree
        free,       // f_bavail
        files,      // f_files
        files_free, // f_ffree
        files_free, // f_favail
        0,          // f_fsid
        0,          // f_flag
        255,        // f_namemax
    ] {
        out.extend_from_slice(&n.to_be_bytes());
    }
    out
}
