//! TLS on every TCP service: what both sides share: the provider, the
//! fingerprint and the one stream type both read and write ([`Stream`]).
//! The server's certificate lives in `wharf-server`, the client's
//! verification of it in `wharf-client`.
//!
//! TLS 1.3 only, with rustls on the *ring* provider (AES-GCM with the CPU's
//! AES instructions first, ChaCha20-Poly1305 where the client prefers it).
//! A server without `--tls-cert` makes its own key and self-signed
//! certificate on first start; clients then pin its SHA-256 fingerprint the
//! way ssh pins host keys.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// The first byte of a TLS handshake record; a Wharf frame starts with the
/// high byte of a header length of at most 64 KiB, always 0.
pub const TLS_HANDSHAKE_BYTE: u8 = 0x16;

/// The crypto provider of every Wharf TLS connection: *ring*'s, with
/// AES-128-GCM first (AES instructions make it the fastest, and 128-bit
/// keys take 10 rounds where 256-bit ones take 14), then AES-256-GCM and
/// ChaCha20-Poly1305 (for CPUs without AES instructions).
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    use rustls::crypto::ring::cipher_suite;
    Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_128_GCM_SHA256,
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
        ],
        ..rustls::crypto::ring::default_provider()
    })
}

/// The SHA-256 fingerprint of a certificate (DER), as `openssl x509
/// -fingerprint -sha256` prints it: uppercase hex pairs joined by colons.
pub fn fingerprint(cert_der: &[u8]) -> String {
    let digest = Sha256::digest(cert_der);
    let mut out = String::with_capacity(digest.len() * 3);
    for (i, byte) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push_str(&format!("{byte:02X}"));
    }
    out
}

/// A connection of either side, plain or under TLS. Sessions are written
/// against this one type, so every service speaks TLS through the same code.
#[derive(Debug)]
pub enum Stream {
    /// No TLS (`--no-tls`).
    Plain(TcpStream),
    /// The server's end of a TLS connection.
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// The client's end of a TLS connection.
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// The label of the keying material a login by key is bound to (RFC 9266's
/// `tls-exporter` channel binding).
const BINDING_LABEL: &[u8] = b"EXPORTER-Channel-Binding";

impl Stream {
    /// The connection's channel binding (RFC 9266, `tls-exporter`): 32
    /// bytes both ends of one TLS connection share and no other connection
    /// has. `None` without TLS.
    pub fn channel_binding(&self) -> Option<[u8; 32]> {
        let out = [0u8; 32];
        let exported = match self {
            Stream::Plain(_) => return None,
            Stream::Server(s) => s
                .get_ref()
                .1
                .export_keying_material(out, BINDING_LABEL, None),
            Stream::Client(s) => s
                .get_ref()
                .1
                .export_keying_material(out, BINDING_LABEL, None),
        };
        exported.ok()
    }

    /// The TCP connection underneath.
    pub fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Server(s) => s.get_ref().0,
            Stream::Client(s) => s.get_ref().0,
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let read = match self.get_mut() {
            Stream::Plain(s) => return Pin::new(s).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        };
        // A peer that closes TCP without TLS's close_notify (a killed
        // process, a dropped connection) reads as the end of the stream, as
        // it does without TLS. Wharf's frames carry their own lengths, and
        // transfers their own md5, so a cut stream is still told apart from
        // a finished one.
        match read {
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Poll::Ready(Ok(())),
            other => other,
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Server(s) => s.is_write_vectored(),
            Stream::Client(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_like_openssls() {
        let fp = fingerprint(b"");
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(fp.starts_with("E3:B0:C4:42:98:FC:1C:14"), "{fp}");
    }
}
