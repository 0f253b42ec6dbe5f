//! The lab's certificate authority (rcgen) and the rustls configurations of the
//! HTTPS server and of the HTTPS probe, all on rustls' ring provider.
//!
//! A [`LabCa`] lives in memory for one lab: its key is never written anywhere.
//! Clients trust exactly the CA they are given (no system roots), so a probe with
//! another lab's CA fails certificate verification, as a real client would.

use std::net::IpAddr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::ServiceError;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn tls_err(what: &str) -> impl FnOnce(rcgen::Error) -> ServiceError + '_ {
    move |e| ServiceError::Tls(format!("{what}: {e}"))
}

/// A certificate authority made for one lab run.
pub struct LabCa {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for LabCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabCa").finish_non_exhaustive()
    }
}

impl LabCa {
    /// A fresh CA (ECDSA P-256) whose subject common name is `name`.
    pub fn new(name: &str) -> Result<Self, ServiceError> {
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(tls_err("ca parameters"))?;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().map_err(tls_err("ca key"))?;
        let cert = params
            .self_signed(&key)
            .map_err(tls_err("ca certificate"))?;
        Ok(LabCa {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA certificate (DER): what a client of the lab trusts.
    pub fn cert(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The CA certificate as PEM, for a tool outside the process (curl --cacert).
    pub fn cert_pem(&self) -> &str {
        &self.pem
    }

    /// A server certificate for `dns_names` and `ips`, signed by this CA.
    pub fn issue(&self, dns_names: &[&str], ips: &[IpAddr]) -> Result<ServerCert, ServiceError> {
        let mut params = CertificateParams::default();
        for name in dns_names {
            let n = (*name)
                .to_owned()
                .try_into()
                .map_err(tls_err("server certificate name"))?;
            params.subject_alt_names.push(SanType::DnsName(n));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        if let Some(first) = dns_names.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(tls_err("server key"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(tls_err("server certificate"))?;
        Ok(ServerCert {
            chain: vec![cert.der().clone(), self.cert.clone()],
            key: key.serialize_der(),
        })
    }
}

/// A server's certificate chain (leaf, then CA) and its private key (PKCS#8).
#[derive(Clone)]
pub struct ServerCert {
    chain: Vec<CertificateDer<'static>>,
    key: Vec<u8>,
}

impl std::fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("ServerCert")
            .field("chain_len", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl ServerCert {
    /// The rustls server configuration presenting this certificate.
    pub fn server_config(&self) -> Result<Arc<ServerConfig>, ServiceError> {
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.clone()));
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ServiceError::Tls(format!("server protocol versions: {e}")))?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), key)
            .map_err(|e| ServiceError::Tls(format!("server certificate: {e}")))?;
        Ok(Arc::new(config))
    }
}

/// A rustls client configuration that trusts `ca` and nothing else.
pub fn client_config(ca: &CertificateDer<'static>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| format!("lab ca certificate: {e}"))?;
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("client protocol versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_certificate_builds_a_server_config() {
        let ca = LabCa::new("portcullis lab ca").unwrap();
        let leaf = ca
            .issue(&["www.lab.test"], &["192.0.2.80".parse().unwrap()])
            .unwrap();
        leaf.server_config().unwrap();
        client_config(ca.cert()).unwrap();
        assert!(ca.cert_pem().starts_with("-----BEGIN CERTIFICATE-----\n"));
    }
}
