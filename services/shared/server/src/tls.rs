//! The server's side of TLS: its certificate, given (`--tls-cert`,
//! `--tls-key`) or made on first start in `DATA_DIR/tls/`, and the acceptor
//! built on it.
//!
//! The made certificate is self-signed, for `localhost`, `127.0.0.1`, `::1`,
//! the host name and every `--tls-name`. It is made in a fresh folder that is
//! then renamed into place, so daemons starting at once on one data
//! directory (the compose stack) end up with the same certificate: the
//! first rename wins and the others load its result.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use wharf_core::tls::{fingerprint, provider};
/// Why the server's certificate cannot be made, read or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// The certificate or key is unusable, with what to do about it.
    #[error("{0}")]
    Unusable(String),
    /// A file of the certificate could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl CertError {
    fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CertError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

type Result<T, E = CertError> = std::result::Result<T, E>;

/// The folder of the made certificate, inside the data directory.
pub const TLS_DIR: &str = "tls";
/// The made certificate's file name.
pub const CERT_FILE: &str = "server.crt";
/// The made key's file name (mode 0600).
pub const KEY_FILE: &str = "server.key";
/// The names the made certificate carries, one per line.
const NAMES_FILE: &str = "names";

/// The TLS flags of every daemon and `wharfd`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServerTlsArgs {
    /// Certificate chain (PEM) to serve [default: made on first start in DATA_DIR/tls/].
    #[arg(
        long,
        env = "WHARF_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "WHARF_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Another name (DNS name or IP address) for the certificate made on first start; repeatable.
    #[arg(long = "tls-name", value_name = "NAME")]
    pub tls_names: Vec<String>,
    /// Serve without TLS: everything, passwords included, crosses the network in clear.
    /// Only behind a TLS-terminating proxy, or for tests.
    #[arg(long, conflicts_with_all = ["tls_cert", "tls_key"])]
    pub no_tls: bool,
}

impl ServerTlsArgs {
    /// The certificate and key files these flags serve (those made in
    /// `data_dir/tls/` unless given), for servers that read them themselves
    /// (standard FTP); `None` under `--no-tls`. Call after [`Self::load`],
    /// which makes them.
    pub fn files(&self, data_dir: &Path) -> Option<(PathBuf, PathBuf)> {
        if self.no_tls {
            return None;
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some((cert.clone(), key.clone())),
            _ => {
                let dir = data_dir.join(TLS_DIR);
                Some((dir.join(CERT_FILE), dir.join(KEY_FILE)))
            }
        }
    }

    /// The TLS these flags ask for: `None` under `--no-tls` (said loudly in
    /// the log), else the given certificate or the one in
    /// `data_dir/tls/`, made there if missing. Logs the fingerprint.
    pub fn load(&self, data_dir: &Path) -> Result<Option<ServerTls>> {
        if self.no_tls {
            tracing::warn!(
                "TLS is OFF (--no-tls): passwords, commands, files and messages cross the network in clear; \
                 serve this way only behind a TLS-terminating proxy or on a trusted host"
            );
            return Ok(None);
        }
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => ServerTls::from_files(cert, key)?,
            _ => ServerTls::made_in(data_dir, &self.tls_names)?,
        };
        tracing::info!(
            certificate = %tls.cert_path.display(),
            "TLS on; certificate SHA-256 fingerprint {}",
            tls.fingerprint
        );
        Ok(Some(tls))
    }
}

/// A server's certificate and the acceptor built on it.
#[derive(Clone)]
pub struct ServerTls {
    acceptor: TlsAcceptor,
    /// SHA-256 fingerprint of the leaf certificate ([`wharf_core::tls::fingerprint`]).
    pub fingerprint: String,
    /// Where the certificate was read from.
    pub cert_path: PathBuf,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls")
            .field("fingerprint", &self.fingerprint)
            .field("cert_path", &self.cert_path)
            .finish_non_exhaustive()
    }
}

impl ServerTls {
    /// The certificate chain and key in these PEM files.
    pub fn from_files(cert: &Path, key: &Path) -> Result<ServerTls> {
        let chain = read_chain(cert)?;
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            CertError::Unusable(format!(
                "cannot read the private key {}: {e}; give a PEM key (PKCS#8, PKCS#1 or SEC1) with --tls-key",
                key.display()
            ))
        })?;
        Self::build(chain, key_der, cert)
    }

    /// The certificate in `data_dir/tls/`, made there first if missing,
    /// with these extra names.
    pub fn made_in(data_dir: &Path, extra_names: &[String]) -> Result<ServerTls> {
        let dir = data_dir.join(TLS_DIR);
        if !dir.join(CERT_FILE).exists() {
            make(data_dir, extra_names)?;
        }
        let had: Vec<String> = std::fs::read_to_string(dir.join(NAMES_FILE))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let missing: Vec<&String> = extra_names.iter().filter(|n| !had.contains(n)).collect();
        if !missing.is_empty() {
            tracing::warn!(
                "the certificate in {} was made without the names {missing:?}; clients using them \
                 will not match it. To make a new one (its fingerprint changes: tell your users), \
                 stop the servers, delete that folder and start again with the --tls-name flags",
                dir.display()
            );
        }
        Self::from_files(&dir.join(CERT_FILE), &dir.join(KEY_FILE))
    }

    fn build(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        cert_path: &Path,
    ) -> Result<ServerTls> {
        let fp = chain.first().map(|c| fingerprint(c)).unwrap_or_default();
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| CertError::Unusable(format!("cannot set up TLS 1.3: {e}")))?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(|e| {
                CertError::Unusable(format!(
                    "the certificate {} and its key do not go together: {e}",
                    cert_path.display()
                ))
            })?;
        // No session tickets: every connection logs in anyway, and there is
        // no ticket key to rotate or leak.
        config.send_tls13_tickets = 0;
        Ok(ServerTls {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            fingerprint: fp,
            cert_path: cert_path.to_path_buf(),
        })
    }

    /// The acceptor for incoming connections.
    pub fn acceptor(&self) -> &TlsAcceptor {
        &self.acceptor
    }
}

fn read_chain(cert: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let unreadable = |e: &dyn std::fmt::Display| {
        CertError::Unusable(format!(
            "cannot read the certificate {}: {e}; give a PEM certificate chain with --tls-cert",
            cert.display()
        ))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unreadable(&e))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| unreadable(&e))?;
    if chain.is_empty() {
        return Err(unreadable(&"no CERTIFICATE block in it"));
    }
    Ok(chain)
}

/// The fingerprint of the first certificate in a PEM file (what
/// `admin-cli tls fingerprint` prints).
pub fn fingerprint_of_file(cert: &Path) -> Result<String> {
    Ok(fingerprint(&read_chain(cert)?[0]))
}

/// The made certificate's path in `data_dir`.
pub fn made_cert_path(data_dir: &Path) -> PathBuf {
    data_dir.join(TLS_DIR).join(CERT_FILE)
}

/// Makes a key and self-signed certificate in a fresh folder beside
/// `data_dir/tls` and renames it into place, unless another process did
/// first.
fn make(data_dir: &Path, extra_names: &[String]) -> Result<()> {
    let mut names = vec!["localhost".to_owned(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() && !names.iter().any(|n| n == host) {
            names.push(host.to_owned());
        }
    }
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let made = rcgen::generate_simple_self_signed(names.clone()).map_err(|e| {
        CertError::Unusable(format!(
            "cannot make a certificate for {names:?}: {e}; check the --tls-name values"
        ))
    })?;
    std::fs::create_dir_all(data_dir).map_err(|e| CertError::io("create", data_dir, e))?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let tmp = data_dir.join(format!(".tls-{}-{nanos}", std::process::id()));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&tmp)
        .map_err(|e| CertError::io("create", &tmp, e))?;
    let written = write_new(&tmp.join(KEY_FILE), 0o600, made.signing_key.serialize_pem())
        .and_then(|()| write_new(&tmp.join(CERT_FILE), 0o644, made.cert.pem()))
        .and_then(|()| write_new(&tmp.join(NAMES_FILE), 0o644, names.join("\n") + "\n"))
        .and_then(|()| give_to_data_dir_owner(data_dir, &tmp));
    if let Err(e) = written {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let target = data_dir.join(TLS_DIR);
    match std::fs::rename(&tmp, &target) {
        Ok(()) => {
            tracing::info!(
                folder = %target.display(),
                "made a TLS key and self-signed certificate for {names:?}"
            );
            Ok(())
        }
        // Another daemon made one first (a non-empty folder is in the way):
        // use that one.
        Err(_) if target.join(CERT_FILE).exists() => {
            let _ = std::fs::remove_dir_all(&tmp);
            Ok(())
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(CertError::io("put in place", target, e))
        }
    }
}

fn write_new(path: &Path, mode: u32, text: String) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| CertError::io("create", path, e))?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| CertError::io("write", path, e))
}

/// Made by root in a data directory that belongs to another account (a
/// container's volume), the folder and its files are given to that account,
/// as the database is, so daemons run unprivileged there can read them.
fn give_to_data_dir_owner(data_dir: &Path, tmp: &Path) -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let meta = std::fs::metadata(data_dir).map_err(|e| CertError::io("inspect", data_dir, e))?;
    if meta.uid() == 0 {
        return Ok(());
    }
    for path in [
        tmp.to_path_buf(),
        tmp.join(KEY_FILE),
        tmp.join(CERT_FILE),
        tmp.join(NAMES_FILE),
    ] {
        std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid()))
            .map_err(|e| CertError::io("give to the data directory's owner", path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_cut_without_close_notify_reads_as_its_end() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let dir = tempfile::tempdir().expect("dir");
        let server = ServerTls::made_in(dir.path(), &[]).expect("certificate");
        let client =
            wharf_client::tls::ClientTls::trusting(&made_cert_path(dir.path())).expect("trust");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let serving = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = server.acceptor().accept(tcp).await.expect("handshake");
            tls.write_all(b"last words").await.expect("write");
            tls.flush().await.expect("flush");
            // Dropped without shutdown: no close_notify, as when a process dies.
        });
        let mut stream = client.connect(&addr, "test").await.expect("connect");
        serving.await.expect("server");
        let mut got = Vec::new();
        stream.read_to_end(&mut got).await.expect("a clean end");
        assert_eq!(got, b"last words");
    }

    #[test]
    fn a_made_certificate_is_kept_and_its_key_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = ServerTls::made_in(dir.path(), &["wharf.example".into()]).expect("make");
        let again = ServerTls::made_in(dir.path(), &[]).expect("reuse");
        assert_eq!(first.fingerprint, again.fingerprint);
        let key = std::fs::metadata(dir.path().join("tls/server.key")).expect("key");
        assert_eq!(key.mode() & 0o777, 0o600);
        let names = std::fs::read_to_string(dir.path().join("tls/names")).expect("names");
        assert!(names.contains("wharf.example") && names.contains("127.0.0.1"));
        assert_eq!(
            fingerprint_of_file(&made_cert_path(dir.path())).expect("fp"),
            first.fingerprint
        );
    }

    #[test]
    fn a_key_that_is_not_the_certificates_is_refused() {
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        ServerTls::made_in(a.path(), &[]).expect("a");
        ServerTls::made_in(b.path(), &[]).expect("b");
        let err =
            ServerTls::from_files(&made_cert_path(a.path()), &b.path().join("tls/server.key"))
                .expect_err("mismatch");
        assert!(err.to_string().contains("do not go together"), "{err}");
    }
}
