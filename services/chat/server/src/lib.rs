//! Wharf's chat service, the server: `wharf-chatd` ([`server::run`]).
//!
//! Where it sits: above wharf-proto ([`wharf_proto::chat`] messages,
//! [`wharf_proto::datagram`] for UDP), wharf-store (users, the message
//! table) and wharf-server (the accept loop, the opening, limits). One room
//! space serves both transports: a TCP session and a UDP session are both
//! *endpoints* of the hub, so a message said over one reaches members on
//! the other. The client is `wharf-chat`.

pub mod server;
