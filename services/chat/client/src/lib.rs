//! Wharf's chat service, the client: the library behind `wharf-chat`
//! ([`client::ChatClient`], over TCP, with a sealed UDP session beside it).
//! The server is `wharf-chatd`.
//!
//! Where it sits: above wharf-proto ([`wharf_proto::chat`] messages,
//! [`wharf_proto::datagram`] for UDP) and wharf-client (the connection,
//! the log-in, the line editor).

pub mod client;
