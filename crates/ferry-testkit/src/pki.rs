//! A private PKI for TLS tests: a CA and a server certificate for
//! `127.0.0.1`, `::1` and `localhost`, written as PEM files (rcgen).
//!
//! ```no_run
//! let dir = tempfile::tempdir().unwrap();
//! let pki = ferry_testkit::pki::Pki::generate(dir.path()).unwrap();
//! // pki.ca, pki.cert, pki.key: paths of PEM files
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

/// PEM files of a CA and a server certificate it signed.
#[derive(Debug, Clone)]
pub struct Pki {
    /// The CA certificate (what clients trust).
    pub ca: PathBuf,
    /// The server certificate (SANs `127.0.0.1`, `::1`, `localhost`).
    pub cert: PathBuf,
    /// The server certificate's private key.
    pub key: PathBuf,
}

impl Pki {
    /// Generates a fresh CA and server certificate into `dir` (`ca.pem`,
    /// `server.pem`, `server.key`).
    pub fn generate(dir: &Path) -> Result<Pki> {
        let ca_key = KeyPair::generate().context("failed to generate the CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "ferry test CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key)?;
        let leaf_key = KeyPair::generate().context("failed to generate the server key")?;
        let mut leaf_params = CertificateParams::new(vec![
            "127.0.0.1".to_string(),
            "::1".to_string(),
            "localhost".to_string(),
        ])?;
        leaf_params
            .distinguished_name
            .push(DnType::CommonName, "ferry test server");
        let leaf = leaf_params.signed_by(&leaf_key, &ca, &ca_key)?;
        let pki = Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        };
        for (path, pem) in [
            (&pki.ca, ca.pem()),
            (&pki.cert, leaf.pem()),
            (&pki.key, leaf_key.serialize_pem()),
        ] {
            std::fs::write(path, pem)
                .with_context(|| format!("failed to write {}", path.display()))?;
        }
        Ok(pki)
    }
}
