//! A request refused, as every service says it: one type from the opening
//! to the last request, put in the wire's words ([`Refusal::reply`]) in
//! one place per service.

use wharf_proto::ErrorCode;
use wharf_proto::message::ErrorReply;

/// A request refused: the code and words the client gets, and whether the
/// connection closes after them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The stable code clients branch on.
    pub code: ErrorCode,
    /// What went wrong and what to do, for people.
    pub message: String,
    /// The connection ends once the refusal is sent.
    pub close: bool,
}

impl Refusal {
    /// A refusal the session goes on after.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
            close: false,
        }
    }

    /// A refusal the connection ends after.
    pub fn closing(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            close: true,
            ..Refusal::new(code, message)
        }
    }

    /// The refusal as the wire's `error` reply.
    pub fn reply(&self) -> ErrorReply {
        ErrorReply::new(self.code, self.message.clone())
    }

    /// `hello` or `login` once logged in.
    pub fn already_logged_in() -> Refusal {
        Refusal::new(ErrorCode::BadRequest, "already logged in")
    }

    /// Any other request before the login.
    pub fn not_logged_in() -> Refusal {
        Refusal::new(ErrorCode::NotLoggedIn, "log in first")
    }
}
