//! The codec's contract: every malformed input is a typed error, rejected
//! frames are skipped without losing step, and bodies stream in bounded chunks.

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};
use wharf_proto::message::{ClientHello, CommonRequest, Login};
use wharf_proto::{Frame, FrameCodec, FrameError, MAX_HEADER_LEN, Outbound, Password, ProtoError};

fn raw_frame(header: &[u8], body: &[u8]) -> BytesMut {
    let mut buf = BytesMut::new();
    buf.put_u32(header.len() as u32);
    buf.extend_from_slice(header);
    buf.extend_from_slice(body);
    buf
}

fn hello() -> CommonRequest {
    CommonRequest::Hello(ClientHello {
        version: 1,
        client: "test".into(),
    })
}

fn decode_all(
    codec: &mut FrameCodec<CommonRequest>,
    buf: &mut BytesMut,
) -> Vec<Frame<CommonRequest>> {
    let mut out = Vec::new();
    while let Some(frame) = codec.decode(buf).expect("valid stream") {
        out.push(frame);
    }
    out
}

#[test]
fn header_then_body_chunks_then_next_header() {
    let mut codec = FrameCodec::<CommonRequest>::new().body_chunk(4);
    let mut buf = BytesMut::new();
    codec
        .encode(
            Outbound::Header {
                msg: hello(),
                body_len: 10,
            },
            &mut buf,
        )
        .expect("encode");
    codec
        .encode(
            Outbound::<CommonRequest>::Body(Bytes::from_static(b"0123456789")),
            &mut buf,
        )
        .expect("encode");
    codec
        .encode(Outbound::msg(hello()), &mut buf)
        .expect("encode");
    let frames = decode_all(&mut codec, &mut buf);
    assert_eq!(
        frames,
        vec![
            Frame::Header {
                msg: hello(),
                body_len: 10
            },
            Frame::Body {
                chunk: Bytes::from_static(b"0123"),
                last: false
            },
            Frame::Body {
                chunk: Bytes::from_static(b"4567"),
                last: false
            },
            Frame::Body {
                chunk: Bytes::from_static(b"89"),
                last: true
            },
            Frame::Header {
                msg: hello(),
                body_len: 0
            },
        ]
    );
    assert!(codec.at_frame_boundary());
}

#[test]
fn body_len_is_on_the_wire_and_omitted_when_zero() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = BytesMut::new();
    codec
        .encode(
            Outbound::Header {
                msg: hello(),
                body_len: 3,
            },
            &mut buf,
        )
        .expect("encode");
    assert_eq!(
        &buf[4..],
        br#"{"op":"hello","version":1,"client":"test","body_len":3}"#
    );
    buf.clear();
    codec
        .encode(Outbound::msg(hello()), &mut buf)
        .expect("encode");
    assert_eq!(&buf[4..], br#"{"op":"hello","version":1,"client":"test"}"#);
}

#[test]
fn oversized_header_is_refused_before_it_is_buffered() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = BytesMut::new();
    buf.put_u32(u32::MAX);
    match codec.decode(&mut buf) {
        Err(ProtoError::HeaderTooLarge { len, max }) => {
            assert_eq!(len, u32::MAX as u64);
            assert_eq!(max, MAX_HEADER_LEN);
        }
        other => panic!("expected HeaderTooLarge, got {other:?}"),
    }
    // Nothing was reserved for the announced 4 GiB.
    assert!(buf.capacity() < 1024 * 1024);
}

#[test]
fn header_exactly_at_the_limit_is_accepted() {
    let pad = "x".repeat(MAX_HEADER_LEN - r#"{"op":"hello","version":1,"client":""}"#.len());
    let header = format!(r#"{{"op":"hello","version":1,"client":"{pad}"}}"#);
    assert_eq!(header.len(), MAX_HEADER_LEN);
    let mut codec = FrameCodec::<CommonRequest>::new();
    let frames = decode_all(&mut codec, &mut raw_frame(header.as_bytes(), b""));
    assert_eq!(frames.len(), 1);
}

#[test]
fn encoder_refuses_a_header_over_the_limit() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = BytesMut::from(&b"keep"[..]);
    let big = CommonRequest::Hello(ClientHello {
        version: 1,
        client: "x".repeat(MAX_HEADER_LEN),
    });
    let err = codec.encode(Outbound::msg(big), &mut buf);
    assert!(matches!(err, Err(ProtoError::HeaderTooLarge { .. })));
    assert_eq!(
        &buf[..],
        b"keep",
        "a refused frame leaves the buffer as it was"
    );
}

#[test]
fn invalid_utf8_and_invalid_json_are_fatal_typed_errors() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let err = codec.decode(&mut raw_frame(b"\xff\xfe{}", b""));
    assert!(matches!(err, Err(ProtoError::InvalidUtf8)), "{err:?}");

    let mut codec = FrameCodec::<CommonRequest>::new();
    let err = codec.decode(&mut raw_frame(b"{\"op\":", b""));
    assert!(matches!(err, Err(ProtoError::InvalidJson(_))), "{err:?}");

    let mut codec = FrameCodec::<CommonRequest>::new();
    let err = codec.decode(&mut raw_frame(b"[1,2,3]", b""));
    assert!(matches!(err, Err(ProtoError::InvalidJson(_))), "{err:?}");

    let mut codec = FrameCodec::<CommonRequest>::new();
    let err = codec.decode(&mut raw_frame(br#"{"op":"hello","body_len":-1}"#, b""));
    assert!(matches!(err, Err(ProtoError::InvalidJson(_))), "{err:?}");
}

#[test]
fn unknown_op_is_rejected_and_its_body_skipped() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = raw_frame(br#"{"op":"format_disk","body_len":5}"#, b"abcde");
    buf.extend_from_slice(&raw_frame(
        br#"{"op":"hello","version":1,"client":"c"}"#,
        b"",
    ));
    let frames = decode_all(&mut codec, &mut buf);
    assert_eq!(frames.len(), 2);
    match &frames[0] {
        Frame::Rejected(FrameError::UnknownOp { op, expected }) => {
            assert_eq!(op, "format_disk");
            assert_eq!(expected, "hello, login");
        }
        other => panic!("expected UnknownOp, got {other:?}"),
    }
    assert!(matches!(
        frames[1],
        Frame::Header {
            msg: CommonRequest::Hello(_),
            body_len: 0
        }
    ));
}

#[test]
fn missing_op_and_bad_fields_are_rejected_not_fatal() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = raw_frame(br#"{"user":"a"}"#, b"");
    buf.extend_from_slice(&raw_frame(br#"{"op":"login","user":7}"#, b""));
    buf.extend_from_slice(&raw_frame(
        br#"{"op":"login","user":"a","password":"p"}"#,
        b"",
    ));
    let frames = decode_all(&mut codec, &mut buf);
    assert_eq!(frames[0], Frame::Rejected(FrameError::MissingOp));
    assert!(
        matches!(&frames[1], Frame::Rejected(FrameError::InvalidMessage { op, .. }) if op == "login")
    );
    assert_eq!(
        frames[2],
        Frame::Header {
            msg: CommonRequest::Login(Login {
                user: "a".into(),
                password: Password::new("p"),
                key: None,
            }),
            body_len: 0
        }
    );
}

#[test]
fn body_over_the_connection_limit_is_fatal() {
    let mut codec = FrameCodec::<CommonRequest>::new().max_body(4);
    let err = codec.decode(&mut raw_frame(
        br#"{"op":"hello","version":1,"client":"c","body_len":5}"#,
        b"",
    ));
    assert!(
        matches!(err, Err(ProtoError::BodyTooLarge { len: 5, max: 4 })),
        "{err:?}"
    );
}

#[test]
fn truncated_frames_are_reported_at_eof() {
    let whole = raw_frame(
        br#"{"op":"hello","version":1,"client":"c","body_len":8}"#,
        b"12345678",
    );
    for cut in 1..whole.len() {
        let mut codec = FrameCodec::<CommonRequest>::new();
        let mut buf = BytesMut::from(&whole[..cut]);
        let result = loop {
            match codec.decode_eof(&mut buf) {
                Ok(Some(_)) => continue,
                other => break other,
            }
        };
        match result {
            Err(ProtoError::Truncated { missing }) => {
                assert!(missing > 0, "cut at {cut}");
            }
            other => panic!("cut at {cut}: expected Truncated, got {other:?}"),
        }
    }
}

#[test]
fn clean_eof_between_frames_is_not_an_error() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = raw_frame(br#"{"op":"hello","version":1,"client":"c"}"#, b"");
    assert!(matches!(
        codec.decode_eof(&mut buf),
        Ok(Some(Frame::Header { .. }))
    ));
    assert!(matches!(codec.decode_eof(&mut buf), Ok(None)));
}

#[test]
fn protocol_md_example_bytes_are_exact() {
    let mut codec = FrameCodec::<CommonRequest>::new();
    let mut buf = BytesMut::new();
    let hello = CommonRequest::Hello(ClientHello {
        version: 1,
        client: "wharf-ftp/0.1.0".into(),
    });
    codec
        .encode(Outbound::msg(hello), &mut buf)
        .expect("encode");
    assert_eq!(&buf[..4], &[0, 0, 0, 0x35]);
    assert_eq!(
        &buf[4..],
        br#"{"op":"hello","version":1,"client":"wharf-ftp/0.1.0"}"#
    );
}

#[test]
fn every_ftp_op_round_trips_and_is_listed() {
    use wharf_proto::Message;
    use wharf_proto::ftp::{FtpReply, FtpRequest};
    let requests = vec![
        FtpRequest::Pwd,
        FtpRequest::Cd { path: "a b".into() },
        FtpRequest::Ls { path: None },
        FtpRequest::Ls {
            path: Some("/x".into()),
        },
        FtpRequest::Mkdir { path: "d".into() },
        FtpRequest::Rm { path: "f".into() },
        FtpRequest::Rmdir { path: "d".into() },
        FtpRequest::Mv {
            from: "a".into(),
            to: "b".into(),
        },
        FtpRequest::Put {
            path: "f".into(),
            size: 3,
            at_once: false,
        },
        FtpRequest::PutData { offset: 0 },
        FtpRequest::PutEnd { md5: "00".into() },
        FtpRequest::Get {
            path: "f".into(),
            offset: 2,
            prefix_md5: Some("ab".into()),
        },
        FtpRequest::Quit,
    ];
    for req in requests {
        let json = serde_json::to_value(&req).expect("serialise");
        let op = json["op"].as_str().expect("op").to_owned();
        assert!(
            FtpRequest::OPS.contains(&op.as_str()),
            "{op} missing from OPS"
        );
        assert_eq!(
            serde_json::from_value::<FtpRequest>(json).expect("deserialise"),
            req
        );
    }
    let replies = vec![
        FtpReply::Cwd { path: "/".into() },
        FtpReply::Listing {
            path: "/".into(),
            count: 0,
        },
        FtpReply::Done,
        FtpReply::PutReady {
            offset: 0,
            prefix_md5: None,
        },
        FtpReply::PutOk {
            path: "/f".into(),
            size: 1,
            md5: "x".into(),
        },
        FtpReply::GetData { size: 1, offset: 0 },
        FtpReply::GetEnd { md5: "x".into() },
        FtpReply::Bye,
    ];
    for reply in replies {
        let json = serde_json::to_value(&reply).expect("serialise");
        let op = json["op"].as_str().expect("op").to_owned();
        assert!(
            FtpReply::OPS.contains(&op.as_str()),
            "{op} missing from OPS"
        );
        assert_eq!(
            serde_json::from_value::<FtpReply>(json).expect("deserialise"),
            reply
        );
    }
    assert_eq!(
        serde_json::to_string(&FtpRequest::Pwd).expect("json"),
        r#"{"op":"pwd"}"#
    );
}
