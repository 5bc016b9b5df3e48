//! Users' SSH public keys as a person gives them: OpenSSH lines
//! (`ssh-ed25519 AAAA... alice@laptop`), as `~/.ssh/id_ed25519.pub` and
//! `authorized_keys` hold them, each known by its SHA256 fingerprint as
//! `ssh-keygen -lf` prints it.
//!
//! Modern algorithms only: Ed25519, ECDSA on the NIST curves, and RSA of
//! 2048 bits or more (signing with SHA-2, as the SSH door insists). DSA,
//! security-key (`sk-`) keys, certificates and `authorized_keys` options
//! are refused, each saying so.

use ssh_key::{Algorithm, HashAlg, PublicKey};

use crate::error::{Error, Result};

/// Keys one user may have at the most.
pub const MAX_KEYS_PER_USER: u64 = 100;

/// Longest comment kept with a key, in characters.
pub const MAX_COMMENT_CHARS: usize = 256;

/// Smallest RSA key taken, in bits.
pub const MIN_RSA_BITS: u32 = 2048;

/// A public key read from an OpenSSH line, ready to be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKeyLine {
    /// The algorithm's name: `ssh-ed25519`, `ecdsa-sha2-nistp256`, `ssh-rsa`.
    pub key_type: String,
    /// The key as OpenSSH writes it, without its comment: `TYPE BASE64`.
    pub public_key: String,
    /// `SHA256:` and the base64 of the key's SHA-256, as ssh-keygen shows it.
    pub fingerprint: String,
    /// The comment after the key (often `user@host`), or empty.
    pub comment: String,
}

/// The SHA256 fingerprint of `key`, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(HashAlg::Sha256).to_string()
}

/// `256 SHA256:... COMMENT (ED25519)`: a key's fingerprint line as
/// `ssh-keygen -lf` prints it.
pub fn fingerprint_line(key: &PublicKey) -> String {
    let (bits, kind) = match key.algorithm() {
        Algorithm::Ed25519 => (256, "ED25519"),
        Algorithm::Ecdsa { curve } => (
            match curve {
                ssh_key::EcdsaCurve::NistP256 => 256,
                ssh_key::EcdsaCurve::NistP384 => 384,
                ssh_key::EcdsaCurve::NistP521 => 521,
            },
            "ECDSA",
        ),
        Algorithm::Rsa { .. } => (key.key_data().rsa().map_or(0, |k| k.key_size()), "RSA"),
        _ => (0, "OTHER"),
    };
    let comment = key.comment().as_str_lossy();
    let comment = if comment.is_empty() {
        "no comment"
    } else {
        comment
    };
    format!("{bits} {} {comment} ({kind})", fingerprint(key))
}

/// The public half of the OpenSSH private key in `path` (the SSH door's
/// host key), for its fingerprint.
pub fn public_key_of(path: &std::path::Path) -> Result<PublicKey> {
    let unusable = |why: String| {
        invalid(format!(
            "{} is not an OpenSSH private key ({why}); the SSH door's host key is DATA_DIR/ssh/ssh_host_ed25519_key",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
        action: "read",
        path: path.to_path_buf(),
        source: e,
    })?;
    let key = ssh_key::PrivateKey::from_openssh(&text).map_err(|e| unusable(e.to_string()))?;
    Ok(key.public_key().clone())
}

/// Reads one OpenSSH public key line.
pub fn parse(line: &str) -> Result<PublicKeyLine> {
    let line = line.trim();
    let first = line.split_whitespace().next().unwrap_or("");
    if first.starts_with("ssh-")
        || first.starts_with("ecdsa-")
        || first.starts_with("sk-")
        || first.is_empty()
    {
        // A key type first, as it should be.
    } else {
        return Err(invalid(format!(
            "{first:?} is not a key type; give the key alone (ssh-ed25519 AAAA... comment), without authorized_keys options"
        )));
    }
    if first.contains("-cert-v01@openssh.com") {
        return Err(invalid(
            "certificates are not taken; give the user's public key itself".into(),
        ));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        invalid(format!(
            "not an OpenSSH public key line ({e}); give a line such as those in ~/.ssh/id_ed25519.pub"
        ))
    })?;
    match key.algorithm() {
        Algorithm::Ed25519 | Algorithm::Ecdsa { .. } => {}
        Algorithm::Rsa { .. } => {
            let bits = key.key_data().rsa().map_or(0, |k| k.key_size());
            if bits < MIN_RSA_BITS {
                return Err(invalid(format!(
                    "an RSA key of {bits} bits is too weak; use one of {MIN_RSA_BITS} bits or more, or better an Ed25519 key (ssh-keygen -t ed25519)"
                )));
            }
        }
        Algorithm::Dsa => {
            return Err(invalid(
                "DSA keys are not taken (OpenSSH dropped them too); make an Ed25519 key with ssh-keygen -t ed25519".into(),
            ));
        }
        other => {
            return Err(invalid(format!(
                "{} keys are not taken; use an Ed25519, ECDSA or RSA key (ssh-keygen -t ed25519)",
                other.as_str()
            )));
        }
    }
    let comment = key.comment().as_str_lossy().to_string();
    if comment.chars().count() > MAX_COMMENT_CHARS || comment.chars().any(char::is_control) {
        return Err(invalid(format!(
            "the key's comment is longer than {MAX_COMMENT_CHARS} characters or holds control characters; shorten it"
        )));
    }
    let mut bare = key.clone();
    bare.set_comment("");
    let public_key = bare
        .to_openssh()
        .map_err(|e| invalid(format!("cannot write the key back ({e})")))?
        .trim()
        .to_owned();
    Ok(PublicKeyLine {
        key_type: key.algorithm().as_str().to_owned(),
        public_key,
        fingerprint: fingerprint(&key),
        comment,
    })
}

/// Reads every key of a file: one per line, blank lines and `#` comments
/// passed over. An error names the line.
pub fn parse_all(text: &str) -> Result<Vec<PublicKeyLine>> {
    let mut keys = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match parse(line) {
            Ok(key) => keys.push(key),
            Err(Error::InvalidKey(why)) => {
                return Err(invalid(format!("line {}: {why}", n + 1)));
            }
            Err(e) => return Err(e),
        }
    }
    if keys.is_empty() {
        return Err(invalid(
            "no key in it; give an OpenSSH public key line (the .pub file ssh-keygen made)".into(),
        ));
    }
    Ok(keys)
}

/// A fingerprint as a person may type it: with or without `SHA256:`.
pub fn normalise_fingerprint(given: &str) -> String {
    let given = given.trim();
    if given.starts_with("SHA256:") {
        given.to_owned()
    } else {
        format!("SHA256:{given}")
    }
}

fn invalid(why: String) -> Error {
    Error::InvalidKey(why)
}

/// Checks a login by key: `public_key` (an OpenSSH line) signed `message`
/// in the `namespace` with `signature` (armored sshsig). Returns the key's
/// fingerprint, for [`crate::Proof::Key`]; an error says what is wrong with
/// the proof (never whether the key belongs to anyone).
pub fn verify_signed(
    public_key: &str,
    signature: &str,
    namespace: &str,
    message: &[u8],
) -> Result<String> {
    let key = parse(public_key)?;
    let public = PublicKey::from_openssh(&key.public_key)
        .map_err(|e| invalid(format!("not an OpenSSH public key ({e})")))?;
    let signature = ssh_key::SshSig::from_pem(signature).map_err(|e| {
        invalid(format!(
            "the signature is not an armored SSH signature ({e})"
        ))
    })?;
    public
        .verify(namespace, message, &signature)
        .map_err(|e| invalid(format!("the signature does not verify ({e})")))?;
    Ok(key.fingerprint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAILM+rvN+ot98qgEN796jTiQfZfG1KaT0PtFDJ/XFSqti foo@bar.com";

    #[test]
    fn an_ed25519_line_reads_with_its_fingerprint_and_comment() {
        let key = parse(ED25519).expect("key");
        assert_eq!(key.key_type, "ssh-ed25519");
        assert_eq!(key.comment, "foo@bar.com");
        assert!(key.public_key.starts_with("ssh-ed25519 AAAAC3"));
        assert!(!key.public_key.contains("foo@bar.com"));
        assert!(
            key.fingerprint.starts_with("SHA256:"),
            "{}",
            key.fingerprint
        );
        assert_eq!(key.fingerprint.len(), "SHA256:".len() + 43);
    }

    #[test]
    fn options_certificates_dsa_and_garbage_are_refused_saying_why() {
        for (line, words) in [
            (
                format!("from=\"10.0.0.1\" {ED25519}"),
                "without authorized_keys options",
            ),
            (
                "ssh-dss AAAAB3NzaC1kc3MAAACBAP x".to_owned(),
                "not an OpenSSH public key",
            ),
            (
                "ssh-ed25519-cert-v01@openssh.com AAAA x".to_owned(),
                "certificates",
            ),
            (
                "ssh-ed25519 not-base64!".to_owned(),
                "not an OpenSSH public key",
            ),
            ("hello".to_owned(), "is not a key type"),
        ] {
            let err = parse(&line).expect_err(&line).to_string();
            assert!(err.contains(words), "{line}: {err}");
        }
    }

    #[test]
    fn a_file_of_keys_reads_every_line_and_names_a_bad_one() {
        let text = format!("# mine\n\n{ED25519}\n");
        assert_eq!(parse_all(&text).expect("keys").len(), 1);
        let err = parse_all(&format!("{ED25519}\nrubbish\n")).expect_err("bad line");
        assert!(err.to_string().contains("line 2"), "{err}");
        assert!(parse_all("# nothing\n").is_err());
    }

    #[test]
    fn fingerprints_are_taken_with_or_without_their_prefix() {
        assert_eq!(normalise_fingerprint("abc"), "SHA256:abc");
        assert_eq!(normalise_fingerprint(" SHA256:abc "), "SHA256:abc");
    }
}
