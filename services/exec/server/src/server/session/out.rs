//! The writing half of a session: whole frames, or nothing once a write
//! failed.

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::io::WriteHalf;
use tokio_util::codec::Encoder;
use wharf_proto::exec::{ExecReply, ExecRequest};
use wharf_proto::{FrameCodec, Outbound};
use wharf_server::Refusal;

use super::{BoxConn, LAST_WORDS};
use crate::server::output::{HEAD_ROOM, OutPipe};

/// The writing half: whole frames, or nothing more once a write failed or
/// was cut short (the stream would be out of step).
pub(super) struct Out {
    pub(super) wr: WriteHalf<BoxConn>,
    pub(super) codec: FrameCodec<ExecRequest>,
    pub(super) head: BytesMut,
    pub(super) broken: bool,
}

impl Out {
    pub(super) fn encode(&mut self, msg: ExecReply, body_len: u64) -> std::io::Result<()> {
        self.head.clear();
        self.codec
            .encode(Outbound::Header { msg, body_len }, &mut self.head)
            .map_err(std::io::Error::other)
    }

    /// Writes a frame without a body.
    pub(super) async fn send(&mut self, reply: ExecReply) -> std::io::Result<()> {
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        self.encode(reply, 0)?;
        self.broken = true;
        self.wr.write_all(&self.head).await?;
        // Under TLS the record may wait in the TLS layer: push it out.
        self.wr.flush().await?;
        self.broken = false;
        Ok(())
    }

    /// Writes a body-less frame at the end of a session, within a few seconds.
    pub(super) async fn last(&mut self, reply: ExecReply) {
        let _ = tokio::time::timeout(LAST_WORDS, self.send(reply)).await;
    }

    /// Sends a refusal as the session's last frame.
    pub(super) async fn last_refusal(&mut self, refusal: Refusal) {
        self.last(ExecReply::Error(refusal.reply())).await;
    }

    /// Sends up to `max` bytes waiting in `pipe` as the body of a `msg`
    /// frame, the header put in the room in front of the data: one write.
    /// Returns the bytes sent.
    pub(super) async fn output(
        &mut self,
        msg: ExecReply,
        pipe: &mut OutPipe,
        max: usize,
    ) -> std::io::Result<usize> {
        if self.broken {
            return Err(std::io::ErrorKind::BrokenPipe.into());
        }
        let buf = pipe.take(max)?;
        let n = buf.len() - HEAD_ROOM;
        if n == 0 {
            return Ok(0);
        }
        self.encode(msg, n as u64)?;
        let head = self.head.len();
        self.broken = true;
        if head <= HEAD_ROOM {
            let start = HEAD_ROOM - head;
            buf[start..HEAD_ROOM].copy_from_slice(&self.head);
            self.wr.write_all(&buf[start..]).await?;
        } else {
            self.wr.write_all(&self.head).await?;
            self.wr.write_all(&buf[HEAD_ROOM..]).await?;
        }
        self.wr.flush().await?;
        self.broken = false;
        Ok(n)
    }
}
