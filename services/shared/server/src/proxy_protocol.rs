//! The PROXY protocol, version 2 (HAProxy's `send-proxy-v2`): a TCP load
//! balancer in front of several replicas says, before anything else on a
//! connection, which client it carries. Behind a balancer every connection
//! comes from the balancer's address, so without it the limits per
//! address and the login penalties per address would fall on everyone at
//! once: one stranger's wrong passwords would lock every user out.
//!
//! Only connections from the addresses given (`--proxy-protocol-from`) are
//! read this way, and from those a header is required: a client cannot
//! claim an address of its choosing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt};

/// The 12 bytes every version 2 header starts with.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The most address and extension bytes a header may carry here (the
/// addresses need 36 at most; HAProxy's extensions fit in far less).
const MAX_BODY: usize = 1024;

/// What is wrong with what a balancer sent.
#[derive(Debug, thiserror::Error)]
pub enum ProxyHeaderError {
    /// The connection did not start with a version 2 header.
    #[error(
        "the connection came from a load balancer's address without a PROXY protocol v2 header (set `send-proxy-v2` on it, or leave its address out of --proxy-protocol-from)"
    )]
    Missing,
    /// A header this code does not read.
    #[error("a PROXY protocol header that is not version 2: {0}")]
    Malformed(&'static str),
    /// The connection failed or ended while the header was read.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads a version 2 header from the start of `stream`, exactly its bytes
/// and no more. The client's address for a proxied connection; `None` for
/// the balancer's own (`LOCAL`, as its health checks send) or an address
/// family other than TCP over IPv4 or IPv6.
pub async fn read_header<S: AsyncRead + Unpin>(
    stream: &mut S,
) -> Result<Option<SocketAddr>, ProxyHeaderError> {
    let mut head = [0u8; 16];
    stream.read_exact(&mut head).await?;
    if head[..12] != SIGNATURE {
        return Err(ProxyHeaderError::Missing);
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0f);
    if version != 2 {
        return Err(ProxyHeaderError::Malformed("its version is not 2"));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_BODY {
        return Err(ProxyHeaderError::Malformed("it is longer than 1024 bytes"));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    match command {
        0 => return Ok(None),
        1 => {}
        _ => return Err(ProxyHeaderError::Malformed("its command is unknown")),
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    match head[13] {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let b = body
                .get(..12)
                .ok_or(ProxyHeaderError::Malformed("its IPv4 addresses are cut"))?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port(&b[8..10]))))
        }
        // TCP over IPv6.
        0x21 => {
            let b = body
                .get(..36)
                .ok_or(ProxyHeaderError::Malformed("its IPv6 addresses are cut"))?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = Ipv6Addr::from(octets);
            Ok(Some(SocketAddr::new(IpAddr::V6(ip), port(&b[32..34]))))
        }
        _ => Ok(None),
    }
}

/// Addresses a load balancer connects from: `10.0.0.5`, `10.0.0.0/24`,
/// `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    addr: IpAddr,
    prefix: u8,
}

impl Network {
    /// Whether `ip` is in this network (an IPv4 address seen as IPv6, on a
    /// dual-stack socket, counts as the IPv4 one).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u8) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (net, width) = bits(self.addr);
        let (ip, ip_width) = bits(ip);
        if width != ip_width {
            return false;
        }
        let mask = match self.prefix {
            0 => 0,
            p => u128::MAX << (128 - u32::from(p)),
        };
        net & mask == ip & mask
    }
}

impl std::str::FromStr for Network {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (ip, prefix) = match s.split_once('/') {
            Some((ip, p)) => (ip, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .parse()
            .map_err(|_| format!("{ip:?} is not an IP address; write 10.0.0.5 or 10.0.0.0/24"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{p:?} is not a prefix length from 0 to {max}"))?,
        };
        Ok(Network { addr, prefix })
    }
}

impl std::fmt::Display for Network {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// A version 2 `PROXY` header for a TCP connection from `client` to
/// `server` (what a balancer sends; for tests and tools).
pub fn header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut out = SIGNATURE.to_vec();
    out.push(0x21);
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            out.push(0x11);
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&s.ip().octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&s.port().to_be_bytes());
        }
        (c, s) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(ip) => ip.to_ipv6_mapped(),
                IpAddr::V6(ip) => ip,
            };
            out.push(0x21);
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(c).octets());
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&c.port().to_be_bytes());
            out.extend_from_slice(&s.port().to_be_bytes());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn read(bytes: &[u8]) -> Result<Option<SocketAddr>, ProxyHeaderError> {
        let mut r = bytes;
        read_header(&mut r).await
    }

    #[tokio::test]
    async fn reads_ipv4_and_ipv6_and_no_byte_more() {
        let server: SocketAddr = "10.0.0.2:2121".parse().expect("addr");
        let client: SocketAddr = "203.0.113.7:40000".parse().expect("addr");
        let mut bytes = header(client, server);
        bytes.extend_from_slice(b"rest");
        let mut r = &bytes[..];
        assert_eq!(read_header(&mut r).await.expect("read"), Some(client));
        assert_eq!(r, b"rest");
        let client6: SocketAddr = "[2001:db8::7]:40000".parse().expect("addr");
        let server6: SocketAddr = "[2001:db8::1]:2121".parse().expect("addr");
        assert_eq!(
            read(&header(client6, server6)).await.expect("read"),
            Some(client6)
        );
    }

    #[test]
    fn networks() {
        let net: Network = "10.0.0.0/24".parse().expect("net");
        assert!(net.contains("10.0.0.77".parse().expect("ip")));
        assert!(net.contains("::ffff:10.0.0.77".parse().expect("ip")));
        assert!(!net.contains("10.0.1.1".parse().expect("ip")));
        assert!(!net.contains("::1".parse().expect("ip")));
        let one: Network = "127.0.0.1".parse().expect("net");
        assert!(one.contains("127.0.0.1".parse().expect("ip")));
        assert!(!one.contains("127.0.0.2".parse().expect("ip")));
        let six: Network = "fd00::/8".parse().expect("net");
        assert!(six.contains("fd12::1".parse().expect("ip")));
        assert!(!six.contains("fe80::1".parse().expect("ip")));
        let all: Network = "0.0.0.0/0".parse().expect("net");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        assert_eq!(one.to_string(), "127.0.0.1/32");
        for bad in ["10.0.0.0/33", "fd00::/129", "host", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn local_and_unknown_families_give_no_address() {
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0x00, 0x00]);
        assert_eq!(read(&local).await.expect("read"), None);
        let mut unix = SIGNATURE.to_vec();
        unix.extend_from_slice(&[0x21, 0x31, 0x00, 0x02, 0, 0]);
        assert_eq!(read(&unix).await.expect("read"), None);
    }

    #[tokio::test]
    async fn refuses_what_is_not_a_version_2_header() {
        let plain = b"PROXY TCP4 203.0.113.7 10.0.0.2 40000 2121\r\n";
        assert!(matches!(read(plain).await, Err(ProxyHeaderError::Missing)));
        let mut v1 = SIGNATURE.to_vec();
        v1.extend_from_slice(&[0x11, 0x11, 0x00, 0x0c]);
        assert!(matches!(
            read(&v1).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut long = SIGNATURE.to_vec();
        long.extend_from_slice(&[0x21, 0x11, 0xff, 0xff]);
        assert!(matches!(
            read(&long).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        let mut cut = SIGNATURE.to_vec();
        cut.extend_from_slice(&[0x21, 0x11, 0x00, 0x04, 1, 2, 3, 4]);
        assert!(matches!(
            read(&cut).await,
            Err(ProxyHeaderError::Malformed(_))
        ));
        assert!(matches!(
            read(&SIGNATURE[..8]).await,
            Err(ProxyHeaderError::Io(_))
        ));
    }
}
