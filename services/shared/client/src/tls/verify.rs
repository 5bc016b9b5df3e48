//! The certificate verifier: the CA given, the system's roots, or the
//! pin, in that order.

use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use wharf_core::tls::fingerprint;

use super::Trust;
use super::pins::find_pin;

#[derive(Debug)]
pub(super) enum Verdict {
    Trusted,
    /// Nothing vouches for it and nothing is pinned: the connector decides
    /// before sending anything.
    Unknown(String),
    Changed {
        pinned: String,
        presented: String,
        line: usize,
    },
    Refused(String),
}

#[derive(Debug)]
pub(super) struct Verifier {
    pub(super) trust: Arc<Trust>,
    pub(super) key: String,
    pub(super) verdict: Mutex<Verdict>,
}

impl Verifier {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Verdict> {
        self.verdict.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, verdict: Verdict) {
        *self.lock() = verdict;
    }
}

impl Trust {
    fn system(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.system
            .get_or_init(|| {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return None;
                }
                WebPkiServerVerifier::builder_with_provider(
                    Arc::new(roots),
                    Arc::clone(&self.provider),
                )
                .build()
                .ok()
            })
            .as_ref()
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = fingerprint(end_entity);
        if let Some(ca) = &self.trust.ca {
            if ca.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
                return Ok(ServerCertVerified::assertion());
            }
            let checked = match &ca.verifier {
                Some(v) => {
                    v.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                }
                None => Err(rustls::Error::General("not the --ca certificate".into())),
            };
            if let Err(e) = &checked {
                self.set(Verdict::Refused(e.to_string()));
            }
            return checked;
        }
        if let Some(system) = self.trust.system()
            && system
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
                .is_ok()
        {
            return Ok(ServerCertVerified::assertion());
        }
        let pinned = match &self.trust.known {
            Some(file) => {
                find_pin(file, &self.key).map_err(|e| rustls::Error::General(e.to_string()))?
            }
            None => None,
        };
        match pinned {
            Some((pinned, _)) if pinned == fp => Ok(ServerCertVerified::assertion()),
            Some((pinned, line)) => {
                self.set(Verdict::Changed {
                    pinned,
                    presented: fp,
                    line,
                });
                Err(rustls::Error::General(
                    "the server's certificate is not the pinned one".into(),
                ))
            }
            None => {
                self.set(Verdict::Unknown(fp));
                Ok(ServerCertVerified::assertion())
            }
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.trust.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.trust
            .provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
