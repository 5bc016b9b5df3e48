//! Who commands run as. A server started as root runs them as the user
//! named by `--run-as`, and refuses to start without it unless told
//! `--allow-root`.

use rustix::process::{getegid, geteuid};

use super::process::Identity;

/// Why the server will not start with the privileges it has.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Root, without `--run-as` or `--allow-root`.
    #[error(
        "refusing to run users' commands as root: pass --run-as USER to run them as that (unprivileged) user, or --allow-root if you really mean root"
    )]
    RootRefused,
    /// `--run-as` names root, without `--allow-root`.
    #[error(
        "--run-as {0} is root; name an unprivileged user, or pass --allow-root if you really mean root"
    )]
    RunAsRoot(String),
    /// `--run-as` another user, without being root.
    #[error(
        "--run-as {name} needs the server to start as root (it runs as uid {uid}); drop --run-as to run commands as this user"
    )]
    NotRoot {
        /// The user asked for.
        name: String,
        /// Our uid.
        uid: u32,
    },
    /// No such user.
    #[error("no user {0:?} in /etc/passwd; create it, or give a numeric UID or UID:GID")]
    NoSuchUser(String),
    /// /etc/passwd cannot be read.
    #[error("cannot read /etc/passwd to look up {name:?}: {source}")]
    Passwd {
        /// The user asked for.
        name: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Resolves `spec`: a name from /etc/passwd, a numeric `UID` (its group is
/// the same number) or `UID:GID`.
pub fn lookup_identity(spec: &str) -> Result<Identity, PrivilegeError> {
    if let Some((uid, gid)) = spec.split_once(':')
        && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
    {
        return Ok(Identity {
            name: spec.to_owned(),
            uid,
            gid,
        });
    }
    if let Ok(uid) = spec.parse() {
        return Ok(Identity {
            name: spec.to_owned(),
            uid,
            gid: uid,
        });
    }
    let passwd =
        std::fs::read_to_string("/etc/passwd").map_err(|source| PrivilegeError::Passwd {
            name: spec.to_owned(),
            source,
        })?;
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let _password = fields.next()?;
            let uid = fields.next()?.parse().ok()?;
            let gid = fields.next()?.parse().ok()?;
            (name == spec).then(|| Identity {
                name: name.to_owned(),
                uid,
                gid,
            })
        })
        .next()
        .ok_or_else(|| PrivilegeError::NoSuchUser(spec.to_owned()))
}

/// Decides who commands run as, from `--run-as` and `--allow-root` and the
/// user the server runs as. `Ok(None)`: as the server itself.
pub fn decide_identity(
    run_as: Option<&str>,
    allow_root: bool,
) -> Result<Option<Identity>, PrivilegeError> {
    let euid = geteuid();
    let Some(spec) = run_as else {
        return if euid.is_root() && !allow_root {
            Err(PrivilegeError::RootRefused)
        } else {
            Ok(None)
        };
    };
    let id = lookup_identity(spec)?;
    if id.uid == 0 && !allow_root {
        return Err(PrivilegeError::RunAsRoot(spec.to_owned()));
    }
    if euid.is_root() {
        return Ok(Some(id));
    }
    if id.uid == euid.as_raw() && id.gid == getegid().as_raw() {
        return Ok(None);
    }
    Err(PrivilegeError::NotRoot {
        name: spec.to_owned(),
        uid: euid.as_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_named_identities() {
        let id = lookup_identity("1234:99").ok();
        assert_eq!(id.map(|i| (i.uid, i.gid)), Some((1234, 99)));
        let id = lookup_identity("1234").ok();
        assert_eq!(id.map(|i| (i.uid, i.gid)), Some((1234, 1234)));
        let root = lookup_identity("root").ok();
        assert_eq!(root.map(|i| (i.uid, i.gid)), Some((0, 0)));
        assert!(matches!(
            lookup_identity("no-such-user-here"),
            Err(PrivilegeError::NoSuchUser(_))
        ));
    }

    #[test]
    fn root_needs_to_be_asked_for() {
        assert!(matches!(
            decide_identity(Some("root"), false),
            Err(PrivilegeError::RunAsRoot(_))
        ));
        if geteuid().is_root() {
            assert!(matches!(
                decide_identity(None, false),
                Err(PrivilegeError::RootRefused)
            ));
            assert_eq!(decide_identity(None, true).ok(), Some(None));
            let nobody = decide_identity(Some("65534:65534"), false).ok().flatten();
            assert_eq!(nobody.map(|i| i.uid), Some(65534));
        } else {
            assert_eq!(decide_identity(None, false).ok(), Some(None));
            assert!(matches!(
                decide_identity(Some("65534:65534"), false),
                Err(PrivilegeError::NotRoot { .. })
            ));
        }
    }
}
