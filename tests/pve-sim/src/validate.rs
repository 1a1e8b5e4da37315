//! Generic parameter verification driven by the schema, reproducing PVE's JSONSchema checks and
//! messages so the driver meets the same 400s it would on a real cluster.

use super::formats;
use super::propdef;
use regex::Regex;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};

fn is_true(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0) != 0,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "1",
        _ => false,
    }
}

/// Compiles a PVE (Perl) pattern as a full match; PVE anchors every `pattern`.
fn pattern_matches(pattern: &str, value: &str) -> bool {
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut cache = cache.lock().unwrap();
    let re = cache.entry(pattern.to_string()).or_insert_with(|| {
        // Perl-only spellings: `(?^:...)` flag groups and `{,n}` quantifiers.
        let p = pattern.replace("(?^:", "(?:").replace("{,", "{0,");
        Regex::new(&format!("^(?:{p})$")).ok()
    });
    // A pattern we cannot translate is not a reason to reject the request.
    re.as_ref().is_none_or(|re| re.is_match(value))
}

pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn num_limit(def: &Value, key: &str) -> Option<f64> {
    def.get(key).and_then(|v| {
        v.as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
    })
}

fn fmt_num(n: f64) -> String {
    if n.fract() == 0.0 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

fn is_integer(v: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^[+-]?\d+$").unwrap())
        .is_match(v)
}

fn is_number(v: &str) -> bool {
    static R: OnceLock<Regex> = OnceLock::new();
    R.get_or_init(|| Regex::new(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$").unwrap())
        .is_match(v)
}

/// PVE's type check on a scalar. Top-level booleans must be exactly `0` or `1`; inside
/// property strings they were normalised from yes/no/on/off/true/false beforehand.
fn type_ok(ty: &str, value: &str) -> bool {
    match ty {
        "boolean" => value == "0" || value == "1",
        "integer" => is_integer(value),
        "number" => is_number(value),
        _ => true,
    }
}

/// Checks one scalar value against its definition, in PVE's order: type, format, pattern,
/// length, numeric limits, enum. `path` names it in nested error keys.
pub fn check_value(def: &Value, value: &str, path: &str, errors: &mut BTreeMap<String, String>) {
    let mut err = |m: String| {
        errors.insert(path.to_string(), m);
    };
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("string");
    if !type_ok(ty, value) {
        return err(format!("type check ('{ty}') failed - got '{value}'"));
    }
    // Format failures are die() texts, so they keep their trailing newline.
    match def.get("format") {
        Some(Value::Object(fmt)) => {
            if let Err(m) = check_property_string(fmt, value, path) {
                return err(format!("invalid format - {m}"));
            }
        }
        Some(Value::String(name)) => {
            if let Err(m) = formats::check(name, value) {
                return err(format!("invalid format - {m}\n"));
            }
        }
        _ => {}
    }
    if let Some(p) = def.get("pattern").and_then(Value::as_str) {
        if !pattern_matches(p, value) {
            return err("value does not match the regex pattern".into());
        }
    }
    if let Some(max) = def.get("maxLength").and_then(Value::as_u64) {
        if value.chars().count() as u64 > max {
            return err(format!("value may only be {max} characters long"));
        }
    }
    if let Some(min) = def.get("minLength").and_then(Value::as_u64) {
        if (value.chars().count() as u64) < min {
            return err(format!("value must be at least {min} characters long"));
        }
    }
    if is_number(value) {
        let n: f64 = value.parse().unwrap_or(0.0);
        if let Some(max) = num_limit(def, "maximum") {
            if n > max {
                return err(format!(
                    "value must have a maximum value of {}",
                    fmt_num(max)
                ));
            }
        }
        if let Some(min) = num_limit(def, "minimum") {
            if n < min {
                return err(format!(
                    "value must have a minimum value of {}",
                    fmt_num(min)
                ));
            }
        }
    }
    if let Some(en) = def.get("enum").and_then(Value::as_array) {
        let opts: Vec<String> = en
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| v.to_string())
            })
            .collect();
        if !opts.iter().any(|o| o == value) {
            err(format!(
                "value '{value}' does not have a value in the enumeration '{}'",
                opts.join(", ")
            ))
        }
    }
}

/// Splits a property string into key/value pairs like PVE: aliases resolved, the bare part
/// goes to the default key, booleans normalised to 0/1. Errors end in a newline (die texts).
pub fn parse_property_string(
    fmt: &Map<String, Value>,
    value: &str,
) -> Result<BTreeMap<String, String>, String> {
    let default_key = fmt
        .iter()
        .find(|(_, d)| is_true(d.get("default_key")))
        .map(|(k, _)| k.clone());
    let mut res: BTreeMap<String, String> = BTreeMap::new();
    let mut bare_seen = false;
    for part in value.split(',') {
        if part.trim().is_empty() {
            continue;
        }
        match part.split_once('=') {
            Some((k, v)) if !k.is_empty() && !v.is_empty() => {
                if res.contains_key(k) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {k}\n"
                    ));
                }
                let mut key = k.to_string();
                if let Some(alias) = fmt
                    .get(&key)
                    .and_then(|d| d.get("alias"))
                    .and_then(Value::as_str)
                {
                    key = alias.to_string();
                }
                let Some(def) = fmt.get(&key) else {
                    return Err(format!(
                        "invalid key in comma-separated list property: {key}\n"
                    ));
                };
                let mut v = v.to_string();
                if def.get("type").and_then(Value::as_str) == Some("boolean") {
                    if let Some(b) = parse_bool(&v) {
                        v = if b { "1".into() } else { "0".into() };
                    }
                }
                res.insert(key, v);
            }
            None => {
                let Some(dk) = &default_key else {
                    return Err(
                        "value without key, but schema does not define a default key\n".into(),
                    );
                };
                if bare_seen || res.contains_key(dk) {
                    return Err(format!(
                        "duplicate key in comma-separated list property: {dk}\n"
                    ));
                }
                bare_seen = true;
                res.insert(dk.clone(), part.to_string());
            }
            Some(_) => return Err("missing key in comma-separated list property\n".into()),
        }
    }
    Ok(res)
}

fn check_property_string(fmt: &Map<String, Value>, value: &str, path: &str) -> Result<(), String> {
    let parsed = parse_property_string(fmt, value)?;
    let mut errors = BTreeMap::new();
    for (k, def) in fmt {
        if def.get("alias").is_some() {
            continue;
        }
        let sub = format!("{path}.{k}");
        match parsed.get(k) {
            Some(v) => check_value(def, v, &sub, &mut errors),
            None if !is_true(def.get("optional")) => {
                errors.insert(sub, "property is missing and it is not optional".into());
            }
            None => {}
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    // PVE's exception text: message line, then one `key: error` line per failure.
    let mut m = String::from("format error\n");
    for (k, v) in errors {
        m.push_str(&format!("{k}: {v}\n"));
    }
    Err(m)
}

/// Validates a whole request against a method's `parameters` schema.
pub fn validate(
    params_schema: &Value,
    params: &BTreeMap<String, String>,
) -> Result<(), BTreeMap<String, String>> {
    let empty = Map::new();
    let props = params_schema
        .get("properties")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let additional = params_schema
        .get("additionalProperties")
        .is_none_or(|v| is_true(Some(v)));
    let mut errors = BTreeMap::new();
    for (name, value) in params {
        match propdef::lookup(props, name) {
            Some(def) => {
                check_value(def, value, name, &mut errors);
                if let Some(req) = def.get("requires").and_then(Value::as_str) {
                    if !params.contains_key(req) {
                        errors.insert(
                            req.to_string(),
                            format!("missing property - '{name}' requires this property"),
                        );
                    }
                }
            }
            None if !additional => {
                errors.insert(
                    name.clone(),
                    "property is not defined in schema and the schema does not allow additional properties".into(),
                );
            }
            None => {}
        }
    }
    for (name, def) in props {
        if name.ends_with("[n]") || is_true(def.get("optional")) {
            continue;
        }
        if !params.contains_key(name) {
            errors.insert(
                name.clone(),
                "property is missing and it is not optional".into(),
            );
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn top_level_booleans_are_strict() {
        let mut e = BTreeMap::new();
        check_value(&json!({"type": "boolean"}), "true", "current", &mut e);
        assert_eq!(e["current"], "type check ('boolean') failed - got 'true'");
        e.clear();
        check_value(&json!({"type": "boolean"}), "1", "current", &mut e);
        assert!(e.is_empty());
        // Inside property strings PVE normalises yes/no first.
        let fmt = json!({"file": {"default_key": 1, "type": "string"}, "backup": {"optional": 1, "type": "boolean"}});
        check_value(
            &json!({"type": "string", "format": fmt}),
            "x,backup=no",
            "scsi1",
            &mut e,
        );
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn perl_patterns_are_translated_and_anchored() {
        assert!(pattern_matches(
            r"(?^:^(0x)[0-9a-fA-F]{16})",
            "0x5000c500deadbeef"
        ));
        assert!(!pattern_matches(
            r"(?^:^(0x)[0-9a-fA-F]{16})",
            "0x5000c500deadbeef00"
        ));
        assert!(pattern_matches(r"[A-Za-z0-9\-_\s]{,8}", "QEMU"));
        assert!(!pattern_matches(r"[A-Za-z0-9\-_\s]{,8}", "TOO-LONG-VENDOR"));
        assert!(!pattern_matches(r"\d+[MG]?", "12X"));
    }

    #[test]
    fn property_strings_resolve_default_key_and_aliases() {
        let fmt = json!({
            "file": {"default_key": 1, "type": "string"},
            "volume": {"alias": "file"},
            "cache": {"optional": 1, "type": "string", "enum": ["none", "writeback"]},
        });
        let fmt = fmt.as_object().unwrap();
        let p = parse_property_string(fmt, "local:1/a.raw,cache=none").unwrap();
        assert_eq!(p["file"], "local:1/a.raw");
        assert_eq!(parse_property_string(fmt, "volume=x").unwrap()["file"], "x");
        assert!(parse_property_string(fmt, "a,b")
            .unwrap_err()
            .contains("duplicate key"));
        assert_eq!(
            parse_property_string(fmt, "a,cache=").unwrap_err(),
            "missing key in comma-separated list property\n"
        );
        let mut errs = BTreeMap::new();
        check_value(
            &json!({"type": "string", "format": fmt}),
            "cache=none",
            "scsi1",
            &mut errs,
        );
        assert_eq!(
            errs["scsi1"],
            "invalid format - format error\nscsi1.file: property is missing and it is not optional\n"
        );
    }

    #[test]
    fn booleans_accept_pve_spellings() {
        for v in ["1", "0", "true", "No", "ON", "off"] {
            assert!(parse_bool(v).is_some(), "{v}");
        }
        assert!(parse_bool("2").is_none());
    }
}
