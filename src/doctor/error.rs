//! What went wrong talking to an endpoint, phrased for the admin with what to change.
//! Built from the client's `PveError`, whose transport variant only says "error
//! sending request" at the top; the useful cause is further down its source chain.

use crate::pve::PveError;

#[derive(Debug, thiserror::Error)]
pub enum DoctorError {
    #[error("TLS certificate not trusted ({0}); put the CA that signed the PVE certificate in ca_file (PEM), or insecure: true for a lab cluster")]
    UntrustedCertificate(String),
    #[error("TLS certificate does not match the host name in url ({0}); use the name the certificate was issued for")]
    CertificateName(String),
    #[error("TLS certificate rejected ({0}); the server must present a valid certificate signed by a CA in ca_file")]
    BadCertificate(String),
    #[error("TLS handshake failed ({0}); is the url scheme right (https on port 8006)?")]
    Tls(String),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("no answer within the timeout ({0}); check the host, port 8006 and firewalls")]
    Timeout(String),
    #[error("credentials rejected (HTTP {status}: {message}); check {fields}")]
    BadCredentials {
        status: u16,
        message: String,
        fields: &'static str,
    },
    #[error("permission denied: {0}")]
    Forbidden(String),
    #[error(
        "the answer is not the Proxmox VE API ({0}); the url must be https://HOST:8006/api2/json"
    )]
    NotPve(String),
    #[error("{0}")]
    Api(String),
    #[error("configuration: {0}")]
    Config(String),
}

/// Texts of every error in the chain, outermost first.
fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push(s.to_string());
        cur = s.source();
    }
    out
}

impl DoctorError {
    /// `token_auth` picks which config keys a 401 points at.
    pub fn from_pve(e: &PveError, token_auth: bool) -> DoctorError {
        match e {
            PveError::Transport { source, .. } => {
                let texts = chain(source);
                // The innermost text is the root cause (e.g. "Connection refused (os error 111)").
                let root = texts.last().cloned().unwrap_or_default();
                let all = texts.join(": ");
                if source.is_timeout() {
                    DoctorError::Timeout(root)
                } else if all.contains("UnknownIssuer")
                    || all.contains("self-signed")
                    || all.contains("self signed")
                {
                    DoctorError::UntrustedCertificate(root)
                } else if all.contains("NotValidForName") || all.contains("not valid for name") {
                    DoctorError::CertificateName(root)
                } else if all.contains("invalid peer certificate") {
                    DoctorError::BadCertificate(root)
                } else if all.contains("certificate")
                    || all.contains("InvalidContentType")
                    || all.contains("handshake")
                {
                    DoctorError::Tls(root)
                } else {
                    DoctorError::Connect(root)
                }
            }
            PveError::Api {
                status: 401,
                message,
                ..
            } => DoctorError::BadCredentials {
                status: 401,
                message: message.clone(),
                fields: if token_auth {
                    "token_id and token_secret"
                } else {
                    "username (with @realm) and password"
                },
            },
            PveError::Api {
                status: 403,
                message,
                ..
            } => DoctorError::Forbidden(message.clone()),
            PveError::Config(m) => DoctorError::Config(m.clone()),
            PveError::Decode { detail, .. } => {
                // The detail quotes the body; its first line is enough to recognise a web page.
                DoctorError::NotPve(
                    detail
                        .lines()
                        .next()
                        .unwrap_or_default()
                        .chars()
                        .take(120)
                        .collect(),
                )
            }
            other => DoctorError::Api(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_api_answers() {
        let api = |status| PveError::Api {
            method: "GET".into(),
            path: "/version".into(),
            status,
            message: "invalid token value!".into(),
            param_errors: Default::default(),
        };
        let e = DoctorError::from_pve(&api(401), true);
        assert!(matches!(e, DoctorError::BadCredentials { .. }));
        assert!(e.to_string().contains("token_secret"), "{e}");
        assert!(DoctorError::from_pve(&api(401), false)
            .to_string()
            .contains("password"));
        assert!(matches!(
            DoctorError::from_pve(&api(403), true),
            DoctorError::Forbidden(_)
        ));
        assert!(matches!(
            DoctorError::from_pve(&PveError::Config("x".into()), true),
            DoctorError::Config(_)
        ));
    }
}
