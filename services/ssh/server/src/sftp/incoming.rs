//! An upload's input: the data of the client's writes, in order, as the
//! reader the storage layer takes. The session ending before `close` is an
//! error, not an end, so a cut upload is kept as a partial, never made
//! visible.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::sync::mpsc;

/// The writes of one upload.
pub(super) struct Incoming {
    rx: mpsc::Receiver<std::io::Result<Bytes>>,
    current: Bytes,
}

impl Incoming {
    pub(super) fn new(rx: mpsc::Receiver<std::io::Result<Bytes>>) -> Incoming {
        Incoming {
            rx,
            current: Bytes::new(),
        }
    }
}

impl AsyncRead for Incoming {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            if !self.current.is_empty() {
                let n = self.current.len().min(buf.remaining());
                buf.put_slice(&self.current[..n]);
                self.current.advance(n);
                return Poll::Ready(Ok(()));
            }
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(Ok(data))) => self.current = data,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Err(e)),
                // The file was closed: its end.
                Poll::Ready(None) => return Poll::Ready(Ok(())),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
