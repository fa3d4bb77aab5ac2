//! The consortium's certificates: a CA made at provisioning, and certificates it issues to the
//! coordinator (server and client name `coordinator.heal`) and to each hospital
//! (`hospital-<i>.heal`). ECDSA P-256 keys.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use crate::error::ProtocolError;
use crate::identity::cert_fingerprint;

/// A certificate with its private key, as PEM.
pub struct Issued {
    pub cert_pem: String,
    /// The private key (PEM). Write it with mode 0600.
    pub key_pem: String,
    /// The identity the coordinator's roster records for this certificate.
    pub fingerprint: String,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// A certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
}

fn pki_err(e: rcgen::Error) -> ProtocolError {
    ProtocolError::Tls(e.to_string())
}

impl Ca {
    /// A new self-signed CA named `name`, valid for ten years.
    pub fn new(name: &str) -> Result<Self, ProtocolError> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(pki_err)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let cert = params.self_signed(&key).map_err(pki_err)?;
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA's private key (PEM), for the operator's own safekeeping (mode 0600).
    pub fn key_pem(&self) -> String {
        self.issuer.key().serialize_pem()
    }

    /// A certificate for `dns_name`, usable as TLS server and client.
    pub fn issue(&self, dns_name: &str) -> Result<Issued, ProtocolError> {
        let key = KeyPair::generate().map_err(pki_err)?;
        let mut params = CertificateParams::new(vec![dns_name.to_string()]).map_err(pki_err)?;
        params.distinguished_name.push(DnType::CommonName, dns_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2034, 1, 1);
        let cert = params.signed_by(&key, &self.issuer).map_err(pki_err)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            fingerprint: cert_fingerprint(cert.der()),
        })
    }
}
