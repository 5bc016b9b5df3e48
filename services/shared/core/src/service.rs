//! The services a user may be granted.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;

/// One Wharf service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    /// File transfer.
    Ftp,
    /// Chat.
    Chat,
    /// Remote command execution.
    Exec,
}

impl Service {
    /// Every service, in display order.
    pub const ALL: [Service; 3] = [Service::Ftp, Service::Chat, Service::Exec];

    /// The name used in the database, on the command line and on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Ftp => "ftp",
            Service::Chat => "chat",
            Service::Exec => "exec",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.as_str() == s.trim())
            .ok_or_else(|| Error::InvalidService(s.to_owned()))
    }
}

/// A set of services, such as a user's rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ServiceSet(u8);

impl ServiceSet {
    /// What a new user gets unless told otherwise: ftp and chat, never exec.
    pub const DEFAULT: ServiceSet = ServiceSet(0b011);

    fn bit(svc: Service) -> u8 {
        match svc {
            Service::Ftp => 1,
            Service::Chat => 2,
            Service::Exec => 4,
        }
    }

    /// True when `svc` is in the set.
    pub fn contains(self, svc: Service) -> bool {
        self.0 & Self::bit(svc) != 0
    }

    /// Adds `svc`.
    pub fn insert(&mut self, svc: Service) {
        self.0 |= Self::bit(svc);
    }

    /// The services in the set, in display order.
    pub fn iter(self) -> impl Iterator<Item = Service> {
        Service::ALL.into_iter().filter(move |s| self.contains(*s))
    }

    /// The names, in display order.
    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Service::as_str).collect()
    }
}

impl fmt::Display for ServiceSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.names().join(","))
    }
}

impl FromStr for ServiceSet {
    type Err = Error;

    /// Parses `ftp,chat`; the empty string is the empty set.
    fn from_str(s: &str) -> Result<Self, Error> {
        let mut set = ServiceSet::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            set.insert(part.parse()?);
        }
        Ok(set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lists_and_refuses_unknown_services() {
        let set: ServiceSet = "exec, ftp".parse().unwrap_or_default();
        assert_eq!(set.names(), ["ftp", "exec"]);
        assert_eq!(set.to_string(), "ftp,exec");
        assert!("ftp,ssh".parse::<ServiceSet>().is_err());
        assert_eq!(ServiceSet::DEFAULT.to_string(), "ftp,chat");
    }
}
