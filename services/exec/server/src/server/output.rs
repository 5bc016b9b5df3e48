//! A command's output pipe (or the near end of its terminal). Output goes
//! out in frames as large as the pipe offers at once: when woken, the
//! server reads what is waiting, and keeps reading while more keeps coming
//! (up to [`MAX_CHUNK`]), then sends it all as one frame with its header in
//! front, in one write.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// Most bytes one frame carries.
pub(super) const MAX_CHUNK: usize = 1024 * 1024;

/// The first read buffer of a pipe; it doubles while reads fill it, up to
/// [`MAX_CHUNK`], so short outputs never pay for a big buffer.
const FIRST_CHUNK: usize = 64 * 1024;

/// Room kept in front of the data for the frame's prefix and header.
pub(super) const HEAD_ROOM: usize = 64;

/// What a pipe has for us.
pub(super) enum Waiting {
    /// Bytes to read.
    Bytes,
    /// Nothing more, ever: every writer closed it.
    End,
}

/// A descriptor registered with the runtime, made non-blocking.
#[allow(unsafe_code)]
fn registered(fd: OwnedFd, interest: Interest) -> io::Result<AsyncFd<OwnedFd>> {
    fcntl_setfl(&fd, fcntl_getfl(&fd)? | OFlags::NONBLOCK)?;
    // SAFETY: an OwnedFd is an open descriptor that stays open, and the
    // same, for as long as it is owned (here, by the AsyncFd).
    Ok(unsafe { AsyncFd::register_with_interest(fd, interest) }?)
}

/// Reads `buf` from `fd` without blocking. The near end of a terminal says
/// EIO once every process has closed the far end: that is its end of file.
fn read_some(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    match rustix::io::read(fd.get_ref(), buf) {
        Ok(n) => Ok(n),
        Err(Errno::IO) => Ok(0),
        Err(Errno::AGAIN) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Err(e.into()),
    }
}

/// The reading end of a command's stdout or stderr, or of its terminal.
pub(super) struct OutPipe {
    rx: AsyncFd<OwnedFd>,
    buf: Vec<u8>,
    /// Bytes the next read takes at most.
    chunk: usize,
    /// Bytes [`OutPipe::waiting`] read, at the start of the data room.
    held: usize,
}

impl OutPipe {
    pub(super) fn new(fd: OwnedFd) -> io::Result<OutPipe> {
        Ok(OutPipe {
            rx: registered(fd, Interest::READABLE)?,
            buf: Vec::new(),
            chunk: FIRST_CHUNK,
            held: 0,
        })
    }

    fn make_room(&mut self) {
        if self.buf.len() < HEAD_ROOM + self.chunk {
            self.buf.resize(HEAD_ROOM + self.chunk, 0);
        }
    }

    /// Waits until the pipe has bytes, or has ended. It reads to know (a
    /// terminal may say it is readable before its bytes can be counted),
    /// and keeps what it read for [`OutPipe::take`]: cancel-safe.
    pub(super) async fn waiting(&mut self) -> io::Result<Waiting> {
        loop {
            if self.held > 0 {
                return Ok(Waiting::Bytes);
            }
            self.make_room();
            let mut ready = self.rx.readable().await?;
            match read_some(&self.rx, &mut self.buf[HEAD_ROOM..HEAD_ROOM + self.chunk]) {
                Ok(0) => return Ok(Waiting::End),
                Ok(n) => self.held = n,
                // Woken with nothing to read: forget the readiness, wait again.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => ready.clear_ready(),
                Err(e) => return Err(e),
            }
        }
    }

    /// What [`OutPipe::waiting`] read, and what is waiting or comes while
    /// reading, up to `max` bytes, without waiting. Returns the buffer:
    /// [`HEAD_ROOM`] free bytes, then the data.
    pub(super) fn take(&mut self, max: usize) -> io::Result<&mut [u8]> {
        let max = max.min(self.chunk);
        self.make_room();
        let mut got = std::mem::take(&mut self.held).min(max);
        while got < max {
            match read_some(&self.rx, &mut self.buf[HEAD_ROOM + got..HEAD_ROOM + max]) {
                Ok(0) => break,
                Ok(n) => got += n,
                // Nothing more now; `waiting` forgets the stale readiness.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // The end, after data: `waiting` says so next.
                Err(e) if got > 0 => {
                    tracing::debug!(error = %e, "an output pipe failed after data");
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        if got == self.chunk {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        }
        Ok(&mut self.buf[..HEAD_ROOM + got])
    }
}

/// Where a command's input is written: its standard input pipe, or the
/// near end of its terminal (the keys typed).
pub struct CommandInput {
    fd: AsyncFd<OwnedFd>,
}

impl CommandInput {
    pub(super) fn new(fd: OwnedFd) -> io::Result<CommandInput> {
        Ok(CommandInput {
            fd: registered(fd, Interest::WRITABLE)?,
        })
    }

    /// Writes all of `buf`, waiting while the pipe or the terminal's input
    /// is full (the program is not reading).
    pub async fn write_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            let mut ready = self.fd.writable().await?;
            match ready.try_io(|fd| Ok(rustix::io::write(fd.get_ref(), buf)?)) {
                Ok(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(Ok(n)) => buf = &buf[n..],
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
        Ok(())
    }
}
