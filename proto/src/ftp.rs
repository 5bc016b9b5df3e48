//! File-transfer messages (`wharf-ftpd`, TCP 2121). See PROTOCOL.md, "File
//! transfer", for the exchanges.
//!
//! Transfers put the md5 in a trailer (`put_end`, `get_end`) rather than up
//! front, so sender and receiver each hash in the same single pass over the
//! data, at the same time.

use serde::{Deserialize, Serialize};

use crate::message::{
    ChangePassword, ClientHello, ErrorReply, Login, LoginOk, Message, ServerHello,
};

/// Requests of the file-transfer service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FtpRequest {
    /// Opening; see [`ClientHello`].
    Hello(ClientHello),
    /// Login; see [`Login`].
    Login(Login),
    /// Change the logged-in user's password; see [`ChangePassword`].
    Passwd(ChangePassword),
    /// Current directory; answered with `cwd`.
    Pwd,
    /// Change directory; answered with `cwd`.
    Cd {
        /// Target, relative to the current directory or absolute from the home.
        path: String,
    },
    /// List a directory (default: the current one); answered with `listing`.
    Ls {
        /// Directory to list.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// Create a directory (its parent must exist); answered with `done`.
    Mkdir {
        /// New directory.
        path: String,
    },
    /// Remove a file; answered with `done`.
    Rm {
        /// File to remove.
        path: String,
    },
    /// Remove an empty directory; answered with `done`.
    Rmdir {
        /// Directory to remove.
        path: String,
    },
    /// Rename or move; the target must not exist; answered with `done`.
    Mv {
        /// Existing path.
        from: String,
        /// New path.
        to: String,
    },
    /// Start (or resume) an upload of `size` bytes; answered with `put_ready`.
    Put {
        /// Target file.
        path: String,
        /// Total size of the file.
        size: u64,
        /// The data follows at once, without waiting for `put_ready`:
        /// `put_data` from offset 0 with the whole file (at most 1 MiB),
        /// then `put_end`. The server answers only with `put_ok` or an
        /// error (a refused put's data is read and dropped), and may hold
        /// `put_ok` back to make several such uploads durable together;
        /// answers come in request order, so a client may send several
        /// before reading them.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        at_once: bool,
    },
    /// The data of the upload, from `offset` to the end, in the body.
    PutData {
        /// Where the body starts: `put_ready`'s offset to resume, 0 to start over.
        offset: u64,
    },
    /// The end of an upload: the md5 of the whole file; answered with `put_ok`.
    PutEnd {
        /// Lowercase hex md5 of the whole file.
        md5: String,
    },
    /// Download from `offset`; answered with `get_data`, its body, then `get_end`.
    Get {
        /// File to download.
        path: String,
        /// Bytes the client already has (a partial download), or 0.
        #[serde(default)]
        offset: u64,
        /// md5 of those bytes; required when `offset` > 0.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_md5: Option<String>,
    },
    /// List the user's interrupted uploads; answered with `partial_list`.
    Partials,
    /// Drop interrupted uploads and release their quota: those of `path`,
    /// or all of them (uploads under way are left alone); answered with
    /// `discarded`.
    Discard {
        /// Target of the uploads to drop; absent for all.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
    },
    /// The user's disk quota and use; answered with `quota`.
    Quota,
    /// End the session; answered with `bye`.
    Quit,
}

impl FtpRequest {
    /// The request as the opening every service shares sees it: `hello`
    /// or `login`, else `None`.
    pub fn into_opening(self) -> Option<crate::message::CommonRequest> {
        match self {
            FtpRequest::Hello(hello) => Some(crate::message::CommonRequest::Hello(hello)),
            FtpRequest::Login(login) => Some(crate::message::CommonRequest::Login(login)),
            _ => None,
        }
    }
}

impl Message for FtpRequest {
    const OPS: &'static [&'static str] = &[
        "hello", "login", "passwd", "pwd", "cd", "ls", "mkdir", "rm", "rmdir", "mv", "put",
        "put_data", "put_end", "get", "partials", "discard", "quota", "quit",
    ];
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// One line of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// File name.
    pub name: String,
    /// File or directory.
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Size in bytes (0 for directories).
    pub size: u64,
    /// Last modification, RFC 3339 UTC.
    pub mtime: String,
}

/// An interrupted upload the server holds for a resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartialUpload {
    /// The upload's target, absolute from the home; absent when the server
    /// cannot tell (kept by an older version, or on a file system without
    /// extended attributes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Size of the whole file: the quota the upload holds.
    pub size: u64,
    /// Bytes received so far.
    pub received: u64,
    /// Last data received, RFC 3339 UTC.
    pub mtime: String,
    /// A session is uploading into it now.
    pub active: bool,
}

/// Replies of the file-transfer service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FtpReply {
    /// Opening; see [`ServerHello`].
    Hello(ServerHello),
    /// Login accepted; see [`LoginOk`].
    LoginOk(LoginOk),
    /// The password was changed; the next login takes the new one.
    PasswdOk,
    /// A request failed; see [`ErrorReply`].
    Error(ErrorReply),
    /// The current directory, after `pwd` or `cd`.
    Cwd {
        /// Absolute path from the home, `/` being the home itself.
        path: String,
    },
    /// A listing; the body is a JSON array of [`Entry`], sorted by name.
    Listing {
        /// The directory listed.
        path: String,
        /// Number of entries in the body.
        count: u64,
    },
    /// A `mkdir`, `rm`, `rmdir` or `mv` succeeded.
    Done,
    /// Ready for `put_data`.
    PutReady {
        /// Bytes of this upload the server already holds from an interrupted
        /// attempt (0 for a fresh upload).
        offset: u64,
        /// md5 of those bytes, when `offset` > 0, for the client to compare
        /// with its own file before resuming.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        prefix_md5: Option<String>,
    },
    /// The upload is verified, durable and visible.
    PutOk {
        /// Where it is.
        path: String,
        /// Its size.
        size: u64,
        /// Its md5, as checked.
        md5: String,
    },
    /// A download follows: the body holds bytes `offset..size`.
    GetData {
        /// Total size of the file.
        size: u64,
        /// Where the body starts: the requested offset if the client's prefix
        /// matched, else 0.
        offset: u64,
    },
    /// End of a download: the md5 of the whole file.
    GetEnd {
        /// Lowercase hex md5 of the whole file.
        md5: String,
    },
    /// The interrupted uploads: the body is a JSON array of
    /// [`PartialUpload`], sorted by path.
    PartialList {
        /// Number of entries in the body.
        count: u64,
    },
    /// Interrupted uploads were dropped.
    Discarded {
        /// How many.
        count: u64,
        /// Quota released, in bytes.
        bytes: u64,
    },
    /// The user's disk quota and what uses it.
    Quota {
        /// Bytes stored.
        used: u64,
        /// Bytes held for uploads under way or interrupted.
        reserved: u64,
        /// The quota in bytes; absent when unlimited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        quota: Option<u64>,
        /// Entries stored (files, folders, links).
        files: u64,
        /// Entries held by interrupted or unfinished uploads; absent from
        /// servers before the file quota.
        #[serde(default)]
        reserved_files: u64,
        /// The file quota, in entries; absent when unlimited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        files_quota: Option<u64>,
    },
    /// Answer to `quit`.
    Bye,
}

impl Message for FtpReply {
    const OPS: &'static [&'static str] = &[
        "hello",
        "login_ok",
        "passwd_ok",
        "error",
        "cwd",
        "listing",
        "done",
        "put_ready",
        "put_ok",
        "get_data",
        "get_end",
        "partial_list",
        "discarded",
        "quota",
        "bye",
    ];
}
