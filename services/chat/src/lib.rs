//! Wharf's chat service: the server ([`server::run`]) and the client library
//! ([`client::ChatClient`]) behind the `wharf-chatd` and `wharf-chat`
//! binaries.
//!
//! Where it sits: above wharf-proto ([`wharf_proto::chat`] messages,
//! [`wharf_proto::datagram`] for UDP) and wharf-core (users, authentication,
//! connection limits, the message table). One room space serves both
//! transports: a TCP session and a UDP session are both *endpoints* of the
//! hub, so a message said over one reaches members on the other.

pub mod client;
pub mod rooms;
pub mod server;

pub use rooms::{MAX_ROOM_LEN, validate_room};
