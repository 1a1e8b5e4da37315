//! The embedded PVE API schema: path-template lookup and access to per-method definitions.

use flate2::read::GzDecoder;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;

static SCHEMA_GZ: &[u8] = include_bytes!("pve-api.json.gz");

enum Seg {
    Lit(String),
    Param(String),
}

struct PathEntry {
    template: String,
    segs: Vec<Seg>,
}

pub struct Schema {
    root: Value,
    entries: Vec<PathEntry>,
}

/// A request path resolved against the schema.
pub struct Matched<'a> {
    pub template: &'a str,
    pub path_params: BTreeMap<String, String>,
}

impl Schema {
    pub fn load() -> anyhow::Result<Schema> {
        let mut text = String::new();
        GzDecoder::new(SCHEMA_GZ).read_to_string(&mut text)?;
        let root: Value = serde_json::from_str(&text)?;
        let paths = root
            .get("paths")
            .and_then(Value::as_object)
            .ok_or_else(|| anyhow::anyhow!("schema has no paths"))?;
        let entries = paths
            .keys()
            .map(|t| PathEntry {
                template: t.clone(),
                segs: t
                    .split('/')
                    .filter(|s| !s.is_empty())
                    .map(
                        |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                            Some(p) => Seg::Param(p.to_string()),
                            None => Seg::Lit(s.to_string()),
                        },
                    )
                    .collect(),
            })
            .collect();
        Ok(Schema { root, entries })
    }

    /// Finds the template for already percent-decoded path segments. Literal segments win over
    /// parameters, as in PVE's router (`/nodes/{node}/qemu` beats a hypothetical `{x}`).
    pub fn lookup(&self, segs: &[String]) -> Option<Matched<'_>> {
        let mut best: Option<(usize, &PathEntry)> = None;
        for e in &self.entries {
            if e.segs.len() != segs.len() {
                continue;
            }
            let mut score = 0;
            let ok = e.segs.iter().zip(segs).all(|(s, v)| match s {
                Seg::Lit(l) => {
                    score += 1;
                    l == v
                }
                Seg::Param(_) => !v.is_empty(),
            });
            if ok && best.is_none_or(|(b, _)| score > b) {
                best = Some((score, e));
            }
        }
        best.map(|(_, e)| {
            let mut path_params = BTreeMap::new();
            for (s, v) in e.segs.iter().zip(segs) {
                if let Seg::Param(p) = s {
                    path_params.insert(p.clone(), v.clone());
                }
            }
            Matched {
                template: &e.template,
                path_params,
            }
        })
    }

    pub fn method(&self, template: &str, method: &str) -> Option<&Value> {
        self.root.get("paths")?.get(template)?.get(method)
    }
}
