//! TLS for the push link: configured certificate and key files, or a self-signed certificate
//! for `localhost` generated at start (for local use).

use crate::settings::LinkSettings;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::io;
use std::sync::Arc;

/// The QUIC server's crypto configuration.
pub fn server_config(
    settings: &LinkSettings,
) -> io::Result<Arc<quinn::crypto::rustls::QuicServerConfig>> {
    let (certs, key) = match (&settings.cert, &settings.key) {
        (Some(cert), Some(key)) => load(cert, key)?,
        _ => self_signed()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(io::Error::other)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("setting `link.cert`: {e}"),
            )
        })?;
    config.alpn_protocols = vec![presenced_wire::link::ALPN.to_vec()];
    let quic =
        quinn::crypto::rustls::QuicServerConfig::try_from(config).map_err(io::Error::other)?;
    Ok(Arc::new(quic))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn self_signed() -> io::Result<Identity> {
    let names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names).map_err(io::Error::other)?;
    let key = PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der());
    Ok((vec![certified.cert.der().clone()], key.into()))
}

fn load(cert: &std::path::Path, key: &std::path::Path) -> io::Result<Identity> {
    let read = |path: &std::path::Path, k: &str| {
        std::fs::read(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("setting `{k}`: cannot read {}: {e}", path.display()),
            )
        })
    };
    let cert_pem = read(cert, "link.cert")?;
    crate::keyfile::private_file(key).map_err(|e| {
        io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("setting `link.key`: {e}"),
        )
    })?;
    let key_pem = read(key, "link.key")?;
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("setting `link.cert`: {e}"),
            )
        })?;
    if certs.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "setting `link.cert`: no PEM certificate in {}",
                cert.display()
            ),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("setting `link.key`: {e}"),
            )
        })?
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "setting `link.key`: no PEM private key in {}",
                    key.display()
                ),
            )
        })?;
    Ok((certs, key))
}
