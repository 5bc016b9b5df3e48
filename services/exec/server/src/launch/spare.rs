//! A spare launcher: one started ahead of any command, which has done the
//! steps that need no command yet and waits for its order.
//!
//! Moving a process into a cgroup makes the kernel wait for an RCU grace
//! period when no other move came just before: up to 14 ms, measured,
//! after 50 ms of quiet, against 0.05 ms back to back. A launcher started
//! for a command paid that on the command's path. A spare pays it while
//! it waits: started with [`SPARE_ARG`] and a socket for standard input,
//! it starts its session and enters a memory cgroup of its own (no limit
//! yet: nothing of a command runs before the limit is set), then reads one
//! [`Order`] from the socket, with the command's standard input, output
//! and error passed along it (`SCM_RIGHTS`). From there it is the launcher
//! of that command, step for step (see [`super`]): the limit is written
//! before anything else.
//!
//! A spare of a server run as root also builds, before it reads its
//! order, the part of the sandbox that is the same for every user, and
//! pivots into it ([`super::sandbox::prepare`]): its command then costs
//! 0.25 ms of launcher work instead of 1 ms (medians over 900 commands).
//! With such a spare the server sends a fourth descriptor: the command's
//! home, a mount of its own cloned from the server's tree as it is at the
//! order (`open_tree`), so that the home is the server's view whatever
//! was mounted since the spare started. Without it the spare goes back
//! to the namespaces it came from and builds everything.
//!
//! The socket is a pair the server made; nothing else can reach it. When
//! the server closes its end without an order (it stops, or drops the
//! spare), the spare exits.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use super::Launch;

/// The first argument that makes a launcher binary a spare.
pub const SPARE_ARG: &str = "--wharf-exec-spare";

/// Largest order, in bytes: a command line is at most 32 KiB
/// (`wharf_proto::exec::MAX_COMMAND_BYTES`), well within a socket's buffer.
pub const MAX_ORDER: usize = 128 * 1024;

/// What a spare is told to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// How (the same as a launcher's argument).
    pub launch: Launch,
    /// The command line, for `sh -c`.
    pub command: String,
    /// The command's whole environment (a spare has none of its own).
    pub env: Vec<(String, String)>,
}

/// Sends `order` to the spare at the other end of `socket`, with `stdio`
/// (the command's standard input, output and error) and, when given, the
/// command's home as a mount of its own (see [`super::sandbox::prepare`]).
pub fn send(
    socket: BorrowedFd<'_>,
    order: &Order,
    stdio: [BorrowedFd<'_>; 3],
    home: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let body = serde_json::to_vec(order).map_err(std::io::Error::other)?;
    let len = u32::try_from(body.len())
        .ok()
        .filter(|&n| n as usize + 4 <= MAX_ORDER)
        .ok_or_else(|| std::io::Error::other("the order is too long for a spare launcher"))?;
    let prefix = len.to_le_bytes();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    let fds: Vec<BorrowedFd<'_>> = stdio.into_iter().chain(home).collect();
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(std::io::Error::other("no room for the descriptors"));
    }
    let whole = prefix.len() + body.len();
    let mut sent = sendmsg(
        socket,
        &[IoSlice::new(&prefix), IoSlice::new(&body)],
        &mut control,
        SendFlags::NOSIGNAL,
    )?;
    // The socket's buffer holds an order whole; should it not, the rest
    // follows (the spare reads until it has all of it).
    while sent < whole {
        let rest: Vec<u8> = prefix.iter().chain(&body).skip(sent).copied().collect();
        match rustix::net::send(socket, &rest, SendFlags::NOSIGNAL)? {
            0 => return Err(std::io::ErrorKind::WriteZero.into()),
            n => sent += n,
        }
    }
    Ok(())
}

/// In the spare: waits for its order on standard input and puts the
/// descriptors that came with it in place of standard input, output and
/// error (the socket goes); the home's mount, when one came with them, is
/// returned beside. `None`: the server closed the socket without one.
pub(super) fn receive() -> std::io::Result<Option<(Order, Option<OwnedFd>)>> {
    let stdin = std::io::stdin();
    let socket = stdin.as_fd();
    let mut buf = vec![0u8; MAX_ORDER];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut buf)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Ok(None);
    }
    let mut stdio: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = message {
            stdio.extend(fds);
        }
    }
    let home = if stdio.len() == 4 { stdio.pop() } else { None };
    let [input, output, error]: [OwnedFd; 3] = stdio
        .try_into()
        .map_err(|_| std::io::Error::other("the order did not carry three or four descriptors"))?;
    let mut have = got.bytes;
    let whole = loop {
        if have >= 4 {
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if len + 4 > MAX_ORDER {
                return Err(std::io::Error::other("the order is too long"));
            }
            if have >= len + 4 {
                break len + 4;
            }
        }
        match rustix::io::read(socket, &mut buf[have..])? {
            0 => return Err(std::io::Error::other("the order was cut short")),
            n => have += n,
        }
    };
    let order = serde_json::from_slice(&buf[4..whole]).map_err(std::io::Error::other)?;
    rustix::stdio::dup2_stdin(&input)?;
    rustix::stdio::dup2_stdout(&output)?;
    rustix::stdio::dup2_stderr(&error)?;
    Ok(Some((order, home)))
}
