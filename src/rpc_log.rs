//! How a CSI call is logged, on the controller and the node alike: a span per call with its
//! method and volume (every log line inside carries them), the request at debug level with
//! every `secrets` map's values blanked, and a failure logged once, at the end, with its code.

use crate::volume_id::shorten;
use std::fmt::Debug;
use tonic::Status;
use tracing::Span;

/// The span one call runs in; `volume` may be a volume id, a CSI name or a snapshot id.
/// At warn level, so that its fields are on the failure line whenever warnings are shown.
pub fn span(method: &'static str, volume: &str) -> Span {
    tracing::warn_span!("rpc", method, volume = %shorten(volume))
}

/// Logs the request at debug level, secrets blanked. Formats nothing unless debug is on.
pub fn request(span: &Span, req: &impl Debug) {
    if tracing::enabled!(tracing::Level::DEBUG) {
        span.in_scope(|| tracing::debug!(request = %redacted(req), "request"));
    }
}

/// Logs a failure once, inside the call's span; the result passes through.
pub fn outcome<T>(span: &Span, result: Result<T, Status>) -> Result<T, Status> {
    if let Err(s) = &result {
        span.in_scope(
            || tracing::warn!(code = ?s.code(), message = %s.message(), "request failed"),
        );
    }
    result
}

/// `{:?}` of a CSI message with the values of every `secrets: {…}` map replaced. CSI names
/// all its secret maps `secrets`; keys stay (they say which secret was sent), values go.
/// Debug output quotes and escapes strings, so braces inside values never end the map early.
pub fn redacted(req: &impl Debug) -> String {
    let text = format!("{req:?}");
    const KEY: &str = "secrets: {";
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find(KEY) {
        out.push_str(&rest[..at + KEY.len()]);
        let body = &rest[at + KEY.len()..];
        let end = map_end(body);
        out.push_str(&blank_values(&body[..end]));
        rest = &body[end..];
    }
    out.push_str(rest);
    out
}

/// Index of the `}` closing a map whose `{` was just read.
fn map_end(body: &str) -> usize {
    let (mut depth, mut quoted, mut escaped) = (0usize, false, false);
    for (i, c) in body.char_indices() {
        match (quoted, escaped, c) {
            (true, true, _) => escaped = false,
            (true, false, '\\') => escaped = true,
            (true, false, '"') => quoted = false,
            (false, _, '"') => quoted = true,
            (false, _, '{') => depth += 1,
            (false, _, '}') if depth == 0 => return i,
            (false, _, '}') => depth -= 1,
            _ => {}
        }
    }
    body.len()
}

/// `"k": "v", "k2": "v2"` → `"k": "…", "k2": "…"`.
fn blank_values(entries: &str) -> String {
    let (mut out, mut quoted, mut escaped, mut in_value) = (String::new(), false, false, false);
    for c in entries.chars() {
        if quoted {
            if !in_value {
                out.push(c);
            }
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => {
                    quoted = false;
                    if in_value {
                        out.push_str("…\"");
                        in_value = false;
                    }
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                quoted = true;
                out.push(c);
            }
            ':' => {
                out.push(c);
                in_value = true;
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::csi::{CreateVolumeRequest, NodeStageVolumeRequest};

    #[test]
    fn secret_values_never_reach_the_log() {
        let mut req = NodeStageVolumeRequest {
            volume_id: "pve-a/pve1/local-lvm/t/vm-1-disk-0".into(),
            ..Default::default()
        };
        req.secrets
            .insert("encryptionPassphrase".into(), "hunter2 \"}{, x: y".into());
        req.secrets.insert("other".into(), "s3cr3t".into());
        let text = redacted(&req);
        assert!(
            !text.contains("hunter2") && !text.contains("s3cr3t"),
            "{text}"
        );
        assert!(
            text.contains("encryptionPassphrase") && text.contains("other"),
            "{text}"
        );
        // What follows the map is kept.
        assert!(text.contains("vm-1-disk-0"), "{text}");
        let after = text.split("secrets: {").nth(1).unwrap();
        assert!(after.contains("volume_context"), "{text}");
    }

    #[test]
    fn requests_without_secrets_are_unchanged() {
        let req = CreateVolumeRequest {
            name: "pvc-1".into(),
            ..Default::default()
        };
        let text = redacted(&req);
        assert_eq!(text, format!("{req:?}"));
    }

    /// Collects what the fmt subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failure_is_logged_once_with_method_volume_and_code() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let mut req = CreateVolumeRequest {
                name: "pvc-7".into(),
                ..Default::default()
            };
            req.secrets.insert("token".into(), "very-secret".into());
            let span = span("CreateVolume", &req.name);
            request(&span, &req);
            let r: Result<(), Status> =
                outcome(&span, Err(Status::invalid_argument("name: too long")));
            assert!(r.is_err());
            let ok: Result<u8, Status> = outcome(&span, Ok(1));
            assert_eq!(ok.unwrap(), 1);
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("very-secret"), "{text}");
        assert_eq!(text.matches("request failed").count(), 1, "{text}");
        let failed = text.lines().find(|l| l.contains("request failed")).unwrap();
        for want in [
            "method=\"CreateVolume\"",
            "volume=pvc-7",
            "code=InvalidArgument",
            "name: too long",
        ] {
            assert!(failed.contains(want), "{want} missing in {failed}");
        }
    }
}
