//! The one error type every handler returns, rendered the way the driver's client reads PVE errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::BTreeMap;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: u16,
    pub message: String,
    /// Per-parameter messages; only set for 400 "Parameter verification failed.".
    pub errors: Option<BTreeMap<String, String>>,
}

impl ApiError {
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
            errors: None,
        }
    }
    /// PVE's generic failure for anything that died inside the handler.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    pub fn params(errors: BTreeMap<String, String>) -> Self {
        ApiError {
            status: 400,
            message: "Parameter verification failed.".into(),
            errors: Some(errors),
        }
    }
    pub fn param(name: &str, msg: impl Into<String>) -> Self {
        let mut m = BTreeMap::new();
        m.insert(name.to_string(), msg.into());
        Self::params(m)
    }
    pub fn auth() -> Self {
        Self::new(401, "authentication failure")
    }
    /// PVE's raise_perm_exc with a free text.
    pub fn perm_text(what: &str) -> Self {
        Self::new(403, format!("Permission check failed ({what})"))
    }
    /// pve-common Exception::raise_perm_exc() without a detail: "Permission check failed".
    pub fn perm_bare() -> Self {
        Self::new(403, "Permission check failed")
    }
    pub fn perm(path: &str, privs: &str) -> Self {
        Self::new(403, format!("Permission check failed ({path}, {privs})"))
    }
    pub fn not_implemented(method: &str, path: &str) -> Self {
        Self::new(501, format!("Method '{method} {path}' not implemented"))
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        // PVE terminates die() messages with a newline; keep that so clients that trim behave alike.
        let mut message = self.message.clone();
        if !message.ends_with('\n') {
            message.push('\n');
        }
        // PVE also puts the message in the HTTP/1 status line; clients that only look there
        // see the same text.
        let reason = hyper::ext::ReasonPhrase::try_from(message.trim_end().replace('\n', " ")).ok();
        let mut body = json!({ "data": null, "message": message });
        if let Some(errors) = self.errors {
            body["errors"] = json!(errors);
        }
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(r) = reason {
            resp.extensions_mut().insert(r);
        }
        resp
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
