//! A command's output pipe. Output goes out in frames as large as the pipe
//! offers at once: when woken, the server reads what is waiting, and keeps
//! reading while more keeps coming (up to [`MAX_CHUNK`]), then sends it
//! all as one frame with its header in front, in one write.

use std::io;
use std::os::fd::OwnedFd;

use tokio::io::Interest;
use tokio::net::unix::pipe;

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

/// The reading end of a command's stdout or stderr.
pub(super) struct OutPipe {
    rx: pipe::Receiver,
    buf: Vec<u8>,
    /// Bytes the next read takes at most.
    chunk: usize,
}

impl OutPipe {
    pub(super) fn new(fd: OwnedFd) -> io::Result<OutPipe> {
        Ok(OutPipe {
            rx: pipe::Receiver::from_owned_fd(fd)?,
            buf: Vec::new(),
            chunk: FIRST_CHUNK,
        })
    }

    /// Waits until the pipe has bytes, or has ended. Cancel-safe: it only
    /// looks.
    pub(super) async fn waiting(&self) -> io::Result<Waiting> {
        loop {
            let ready = self.rx.ready(Interest::READABLE).await?;
            if rustix::io::ioctl_fionread(&self.rx)? > 0 {
                return Ok(Waiting::Bytes);
            }
            if ready.is_read_closed() {
                return Ok(Waiting::End);
            }
            // Woken with nothing to read: forget the readiness and wait again.
            let _ = self
                .rx
                .try_io(|| Err::<(), _>(io::ErrorKind::WouldBlock.into()));
        }
    }

    /// Reads what is waiting, and what comes while reading, up to `max`
    /// bytes, without waiting. Returns the buffer: [`HEAD_ROOM`] free bytes,
    /// then the data.
    pub(super) fn take(&mut self, max: usize) -> io::Result<&mut [u8]> {
        let max = max.min(self.chunk);
        if self.buf.len() < HEAD_ROOM + self.chunk {
            self.buf.resize(HEAD_ROOM + self.chunk, 0);
        }
        let mut got = 0;
        while got < max {
            match self
                .rx
                .try_read(&mut self.buf[HEAD_ROOM + got..HEAD_ROOM + max])
            {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        if got == self.chunk {
            self.chunk = (self.chunk * 2).min(MAX_CHUNK);
        }
        Ok(&mut self.buf[..HEAD_ROOM + got])
    }
}
