//! Property tests: anything encoded decodes to itself however the stream is
//! split, and no byte string can make the decoder panic.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};
use wharf_proto::message::{
    ClientHello, CommonReply, CommonRequest, ErrorCode, ErrorReply, Login, LoginOk, ServerHello,
};
use wharf_proto::{Frame, FrameCodec, Outbound, Password};

fn request() -> impl Strategy<Value = CommonRequest> {
    prop_oneof![
        (any::<u32>(), ".{0,40}")
            .prop_map(|(version, client)| CommonRequest::Hello(ClientHello { version, client })),
        (".{0,40}", ".{0,40}").prop_map(|(user, pw)| CommonRequest::Login(Login {
            user,
            password: Password::new(pw),
            key: None,
        })),
    ]
}

fn reply() -> impl Strategy<Value = CommonReply> {
    prop_oneof![
        (any::<u32>(), ".{0,20}", ".{0,20}").prop_map(|(version, server, service)| {
            CommonReply::Hello(ServerHello {
                version,
                server,
                service,
                challenge: None,
            })
        }),
        ".{0,40}".prop_map(|user| CommonReply::LoginOk(LoginOk { user })),
        (
            prop_oneof![
                Just(ErrorCode::AuthFailed),
                Just(ErrorCode::QuotaExceeded),
                Just(ErrorCode::Internal)
            ],
            ".{0,80}"
        )
            .prop_map(|(code, message)| CommonReply::Error(ErrorReply { code, message })),
    ]
}

/// Feeds `wire` to a decoder in pieces cut at `cuts`, returning every frame.
fn decode_in_pieces<M: wharf_proto::Message>(
    wire: &[u8],
    cuts: &[usize],
    chunk: usize,
) -> Vec<Frame<M>> {
    let mut codec = FrameCodec::<M>::new().body_chunk(chunk);
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
    cuts.push(wire.len());
    cuts.sort_unstable();
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut from = 0;
    for to in cuts {
        buf.extend_from_slice(&wire[from..to]);
        from = to;
        while let Some(frame) = codec.decode(&mut buf).expect("a valid stream decodes") {
            frames.push(frame);
        }
    }
    assert!(
        matches!(codec.decode_eof(&mut buf), Ok(None)),
        "nothing left over"
    );
    frames
}

/// Reassembles frames into (message, body) pairs, checking chunk flags.
fn reassemble<M: std::fmt::Debug>(frames: Vec<Frame<M>>) -> Vec<(M, Vec<u8>)> {
    let mut out: Vec<(M, Vec<u8>, u64)> = Vec::new();
    for frame in frames {
        match frame {
            Frame::Header { msg, body_len } => {
                if let Some(prev) = out.last() {
                    assert_eq!(prev.1.len() as u64, prev.2, "previous body complete");
                }
                out.push((msg, Vec::new(), body_len));
            }
            Frame::Body { chunk, last } => {
                let cur = out.last_mut().expect("body after a header");
                cur.1.extend_from_slice(&chunk);
                assert_eq!(last, cur.1.len() as u64 == cur.2);
            }
            Frame::Rejected(e) => panic!("valid frame rejected: {e}"),
        }
    }
    out.into_iter().map(|(m, b, _)| (m, b)).collect()
}

proptest! {
    #[test]
    fn requests_round_trip_split_anywhere(
        msgs in prop::collection::vec((request(), prop::collection::vec(any::<u8>(), 0..600)), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
        chunk in 1usize..300,
    ) {
        let mut codec = FrameCodec::<CommonRequest>::new();
        let mut wire = BytesMut::new();
        for (msg, body) in &msgs {
            codec.encode(Outbound::Header { msg: msg.clone(), body_len: body.len() as u64 }, &mut wire).expect("encode");
            codec.encode(Outbound::<CommonRequest>::Body(Bytes::copy_from_slice(body)), &mut wire).expect("encode");
        }
        let got = reassemble(decode_in_pieces::<CommonRequest>(&wire, &cuts, chunk));
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn replies_round_trip_split_anywhere(
        msgs in prop::collection::vec((reply(), prop::collection::vec(any::<u8>(), 0..200)), 1..6),
        cuts in prop::collection::vec(any::<usize>(), 0..12),
    ) {
        let mut codec = FrameCodec::<CommonReply>::new();
        let mut wire = BytesMut::new();
        for (msg, body) in &msgs {
            codec.encode(Outbound::Header { msg: msg.clone(), body_len: body.len() as u64 }, &mut wire).expect("encode");
            codec.encode(Outbound::<CommonReply>::Body(Bytes::copy_from_slice(body)), &mut wire).expect("encode");
        }
        let got = reassemble(decode_in_pieces::<CommonReply>(&wire, &cuts, 64));
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..2048), cuts in prop::collection::vec(any::<usize>(), 0..8)) {
        let mut codec = FrameCodec::<CommonRequest>::new();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        cuts.push(bytes.len());
        cuts.sort_unstable();
        let mut buf = BytesMut::new();
        let mut from = 0;
        'feed: for to in cuts {
            buf.extend_from_slice(&bytes[from..to]);
            from = to;
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
        }
        let _ = codec.decode_eof(&mut buf);
    }

    #[test]
    fn arbitrary_json_headers_never_panic(header in "\\PC{0,200}", body_len in 0u64..64) {
        let mut codec = FrameCodec::<CommonRequest>::new();
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&(header.len() as u32).to_be_bytes());
        buf.extend_from_slice(header.as_bytes());
        buf.extend_from_slice(&vec![0u8; body_len as usize]);
        while let Ok(Some(_)) = codec.decode(&mut buf) {}
    }
}
