use super::{
    Reply,
    command::Command,
    error::{ControlChanError, ControlChanErrorKind},
    line_parser,
};

use bytes::BytesMut;
use std::io::Write;
use tokio_util::codec::{Decoder, Encoder};

// FTPCodec implements tokio's `Decoder` and `Encoder` traits for the control channel, that we'll
// use to decode FTP commands and encode their responses.
pub struct FtpCodec {
    // Stored index of the next index to examine for a '\n' character. This is used to optimize
    // searching. For example, if `decode` was called with `abc`, it would hold `3`, because that
    // is the next index to examine. The next time `decode` is called with `abcde\n`, we will only
    // look at `de\n` before returning.
    next_index: usize,
}

/// The longest command line accepted, `\r\n` included (Wharf's patch: without it a client that
/// never sends `\n` makes the server buffer without bound). vsftpd allows 4096 bytes; this leaves
/// room for a path of 4096 bytes after the command.
pub const MAX_LINE: usize = 8192;

impl FtpCodec {
    pub fn new() -> Self {
        FtpCodec { next_index: 0 }
    }
}

impl Decoder for FtpCodec {
    type Item = Command;
    type Error = ControlChanError;

    // Here we decode the incoming bytes into a meaningful command. We'll split on newlines, and
    // parse the resulting line using `Command::parse()`. This method will be called by tokio.
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Command>, Self::Error> {
        // Only the first MAX_LINE bytes may hold the end of the line (Wharf's patch).
        let end = buf.len().min(MAX_LINE);
        let start = self.next_index.min(end);
        if let Some(newline_offset) = buf[start..end].iter().position(|b| *b == b'\n') {
            let newline_index = newline_offset + start;
            let line = buf.split_to(newline_index + 1);
            self.next_index = 0;
            Ok(Some(line_parser::parse(line)?))
        } else if is_synch_abor(&buf[..]) {
            // Wharf's patch: `ABOR` sent as a Telnet "Synch" (its last byte,
            // the `\n`, urgent: Python's ftplib sends it so) arrives
            // without its `\n`, which TCP keeps out of band: the `\r` ends
            // it. Telnet IP and the IAC before it are dropped.
            let line = buf.split_to(buf.len());
            self.next_index = 0;
            let text: Vec<u8> = line.iter().copied().filter(|b| *b < 0x80).collect();
            let mut text = text;
            text.push(b'\n');
            Ok(Some(line_parser::parse(bytes::Bytes::from(text))?))
        } else if buf.len() >= MAX_LINE {
            // Nothing more of this line is kept: the connection is closed after the reply.
            buf.clear();
            self.next_index = 0;
            Err(ControlChanError::new(ControlChanErrorKind::LineTooLong))
        } else {
            self.next_index = buf.len();
            Ok(None)
        }
    }
}

/// Wharf's patch: a whole `ABOR` line but for its urgent `\n`, possibly
/// after Telnet IAC IP / IAC DM bytes.
fn is_synch_abor(buf: &[u8]) -> bool {
    let text: Vec<u8> = buf.iter().copied().filter(|b| *b < 0x80).collect();
    text.eq_ignore_ascii_case(b"ABOR\r")
}

impl Encoder<Reply> for FtpCodec {
    type Error = ControlChanError;

    // Here we encode the outgoing response
    fn encode(&mut self, reply: Reply, buf: &mut BytesMut) -> Result<(), Self::Error> {
        let mut buffer = vec![];
        match reply {
            Reply::None => {
                return Ok(());
            }
            Reply::CodeAndMsg { code, msg } => {
                if msg.is_empty() {
                    writeln!(buffer, "{}\r", code as u32)?;
                } else {
                    writeln!(buffer, "{} {}\r", code as u32, msg)?;
                }
            }
            Reply::MultiLine { code, mut lines } => {
                // Get the last line since it needs to be preceded by the response code.
                let last_line = lines.pop().unwrap_or_default();

                // Lines starting with a digit should be indented
                for it in lines.iter_mut() {
                    if it.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                        it.insert(0, ' ');
                    }
                }
                if lines.is_empty() {
                    writeln!(buffer, "{} {}\r", code as u32, last_line)?;
                } else {
                    write!(buffer, "{}-{}\r\n{} {}\r\n", code as u32, lines.join("\r\n"), code as u32, last_line)?;
                }
            }
        }
        buf.extend(&buffer);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::ReplyCode;
    use super::*;

    #[test]
    fn a_line_longer_than_the_cap_is_refused_and_not_kept() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::from(&vec![b'a'; MAX_LINE - 1][..]);
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        buf.extend_from_slice(b"a");
        assert!(codec.decode(&mut buf).is_err());
        assert!(buf.is_empty());
    }

    #[test]
    fn a_long_line_read_at_once_is_refused_and_a_short_one_kept() {
        let mut codec = FtpCodec::new();
        let mut long = vec![b'a'; MAX_LINE];
        long.extend_from_slice(b"\r\n");
        assert!(codec.decode(&mut BytesMut::from(&long[..])).is_err());
        let mut short = vec![b'N', b'O', b'O', b'P'];
        short.resize(MAX_LINE - 2, b' ');
        short.extend_from_slice(b"\r\n");
        assert!(matches!(codec.decode(&mut BytesMut::from(&short[..])), Ok(Some(_))));
    }

    #[test]
    fn encode_multiline_reply_with_blank_line_does_not_panic() {
        let mut codec = FtpCodec::new();
        let mut buf = BytesMut::new();
        let reply = Reply::new_multiline(ReplyCode::HelpMessage, vec!["Usage: foo", "", "Options:"]);

        codec.encode(reply, &mut buf).unwrap();

        assert_eq!(buf, "214-Usage: foo\r\n\r\n214 Options:\r\n".as_bytes());
    }
}
