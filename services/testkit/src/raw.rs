//! Raw protocol connections, for sending what the client libraries never
//! would: framed by the real codec and logged in with the opening every
//! service shares (`hello`, then `login`), then handed over to the
//! service's own messages.

use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::Framed;
use wharf_core::Password;
use wharf_core::tls::Stream;
use wharf_proto::message::{ClientHello, CommonReply, CommonRequest, Login, Message};
use wharf_proto::{Frame, FrameCodec, Outbound, PROTOCOL_VERSION};

use crate::{PW, WAIT, connect};

/// A framed connection that reads `R`, the service's replies.
pub type Raw<R> = Framed<Stream, FrameCodec<R>>;

/// A connection to `addr` logged in as `user` (password [`PW`]).
pub async fn login<R: Message>(addr: &str, user: &str) -> Raw<R> {
    login_on(connect(addr).await, user).await
}

/// [`login`] over a connection made by the caller (from another source
/// address, say).
pub async fn login_on<R: Message>(stream: Stream, user: &str) -> Raw<R> {
    let mut conn = Framed::new(stream, FrameCodec::<CommonReply>::new());
    let hello = CommonRequest::Hello(ClientHello {
        version: PROTOCOL_VERSION,
        client: "raw".into(),
    });
    let reply = ask(&mut conn, hello).await;
    assert!(matches!(reply, CommonReply::Hello(_)), "{reply:?}");
    let login = CommonRequest::Login(Login {
        user: user.into(),
        password: Password::new(PW),
        key: None,
    });
    let reply = ask(&mut conn, login).await;
    assert!(matches!(reply, CommonReply::LoginOk(_)), "{reply:?}");
    // What was read past the opening stays in the buffer.
    conn.map_codec(|_| FrameCodec::new())
}

/// Sends an opening request and reads its reply, within [`WAIT`].
pub async fn ask(conn: &mut Raw<CommonReply>, req: CommonRequest) -> CommonReply {
    conn.send(Outbound::msg(req)).await.expect("send");
    match tokio::time::timeout(WAIT, conn.next())
        .await
        .expect("a reply in time")
    {
        Some(Ok(Frame::Header { msg, .. })) => msg,
        other => panic!("expected a reply to the opening, got {other:?}"),
    }
}
