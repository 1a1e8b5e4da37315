//! Authentication (API tokens, ticket cookies + CSRF) and privilege checks.

use super::config::SimConfig;
use super::error::{ApiError, ApiResult};
use axum::http::HeaderMap;
use rand::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// PVE tickets expire after two hours.
const TICKET_LIFETIME: Duration = Duration::from_secs(2 * 3600);

/// What one ACL subject (a user, or a token on its own) was granted.
#[derive(Debug, Clone, Default)]
pub struct Grant {
    /// Privileges on every path. None (with no ACL) = every privilege.
    pub privs: Option<Vec<String>>,
    /// Extra privileges on ACL paths, propagating to the paths below them.
    pub acl: BTreeMap<String, Vec<String>>,
}

impl Grant {
    pub fn unrestricted(&self) -> bool {
        self.privs.is_none() && self.acl.is_empty()
    }

    /// The privilege on `path` itself or through an ACL on a path above it
    /// (pve-access-control AccessControl::roles walks the ACL tree with propagation).
    fn direct(&self, path: &str, privilege: &str) -> bool {
        if self.unrestricted() {
            return true;
        }
        let global = self
            .privs
            .as_ref()
            .is_some_and(|p| p.iter().any(|x| x == privilege));
        global
            || self
                .acl
                .iter()
                .any(|(a, ps)| under(path, a) && ps.iter().any(|x| x == privilege))
    }

    /// [`Grant::direct`], plus what the pools `path` belongs to grant: pve-access-control
    /// RPCEnvironment::compile_acl_path gives /vms/<vmid> and /storage/<id> of a pool's
    /// members the roles held on /pool/<pool>.
    fn has(&self, path: &str, privilege: &str, pools: &PoolPaths) -> bool {
        self.direct(path, privilege)
            || pools
                .get(path)
                .is_some_and(|ps| ps.iter().any(|p| self.direct(p, privilege)))
    }
}

/// ACL path of a pool member (`/vms/<vmid>`, `/storage/<id>`) -> the `/pool/<pool>` paths
/// it inherits from. Taken once per request, as PVE compiles ACLs once per request.
pub type PoolPaths = BTreeMap<String, Vec<String>>;

/// Who made a request and what they may do.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `user@realm` or `user@realm!token`.
    pub userid: String,
    /// The subject's own grant (the token's for a token).
    pub own: Grant,
    /// For a privilege-separated token, its owning user's grant: pve-access-control
    /// RPCEnvironment::permissions intersects the two ("intersect user and token
    /// permissions"). None for users, for tokens without privsep (they got the user's
    /// grant as `own`) and for tokens whose user the config does not list.
    pub owner: Option<Grant>,
    pub is_token: bool,
    pub pools: PoolPaths,
}

/// Is `path` the ACL path `acl` or below it?
fn under(path: &str, acl: &str) -> bool {
    let acl = acl.trim_end_matches('/');
    acl.is_empty() || path == acl || path.starts_with(&format!("{acl}/"))
}

impl Identity {
    /// A caller with no privileges at all (before login).
    pub fn anonymous() -> Identity {
        Identity {
            userid: String::new(),
            own: Grant {
                privs: Some(vec![]),
                acl: BTreeMap::new(),
            },
            owner: None,
            is_token: false,
            pools: PoolPaths::new(),
        }
    }

    pub fn has(&self, path: &str, privilege: &str) -> bool {
        self.own.has(path, privilege, &self.pools)
            && self
                .owner
                .as_ref()
                .is_none_or(|u| u.has(path, privilege, &self.pools))
    }

    /// The ACL paths this identity's grants name, for listing permissions.
    pub fn acl_paths(&self) -> Vec<String> {
        let mut out: Vec<String> = self.own.acl.keys().cloned().collect();
        for p in self.pools.keys() {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        out
    }
}

struct Ticket {
    userid: String,
    csrf: String,
    issued: Instant,
}

#[derive(Default)]
pub struct Tickets {
    map: Mutex<HashMap<String, Ticket>>,
}

fn now_hex() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!("{secs:08X}")
}

fn random_hex(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| format!("{:02x}", rng.gen::<u8>())).collect()
}

impl Tickets {
    /// POST /access/ticket. Returns the PVE response object.
    pub fn login(
        &self,
        cfg: &SimConfig,
        username: &str,
        password: &str,
        realm: Option<&str>,
    ) -> ApiResult<Value> {
        let userid = match realm {
            Some(r) if !username.contains('@') => format!("{username}@{r}"),
            _ => username.to_string(),
        };
        let user = cfg
            .users
            .iter()
            .find(|u| u.userid == userid && u.password == password);
        let Some(user) = user else {
            return Err(ApiError::auth());
        };
        let ticket = format!("PVE:{}:{}::{}", user.userid, now_hex(), random_hex(32));
        let csrf = format!("{}:{}", now_hex(), random_hex(16));
        self.map.lock().unwrap().insert(
            ticket.clone(),
            Ticket {
                userid: user.userid.clone(),
                csrf: csrf.clone(),
                issued: Instant::now(),
            },
        );
        Ok(serde_json::json!({
            "ticket": ticket,
            "CSRFPreventionToken": csrf,
            "username": user.userid,
            "clustername": cfg.cluster_name,
        }))
    }

    fn lookup(&self, ticket: &str) -> Option<(String, String)> {
        let map = self.map.lock().unwrap();
        let t = map.get(ticket)?;
        (t.issued.elapsed() < TICKET_LIFETIME).then(|| (t.userid.clone(), t.csrf.clone()))
    }
}

fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    for h in headers.get_all("cookie") {
        let Ok(s) = h.to_str() else { continue };
        for part in s.split(';') {
            if let Some((k, v)) = part.trim().split_once('=') {
                if k == name {
                    // Clients URL-encode the ticket's colons.
                    return Some(percent_decode(v));
                }
            }
        }
    }
    None
}

pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// Resolves the caller. `write` requests authenticated by ticket must carry the CSRF token.
pub fn authenticate(
    cfg: &SimConfig,
    tickets: &Tickets,
    headers: &HeaderMap,
    write: bool,
    pools: PoolPaths,
) -> ApiResult<Identity> {
    if let Some(auth) = headers.get("authorization").and_then(|h| h.to_str().ok()) {
        // `PVEAPIToken=user@realm!token=secret` (a space instead of the first '=' is accepted);
        // PVE splits id and secret at the last '='.
        let rest = auth
            .strip_prefix("PVEAPIToken=")
            .or_else(|| auth.strip_prefix("PVEAPIToken "));
        let Some(rest) = rest else {
            return Err(ApiError::new(401, "No ticket"));
        };
        let Some((id, secret)) = rest.rsplit_once('=') else {
            return Err(ApiError::new(401, "no tokenid specified"));
        };
        let Some(tok) = cfg.tokens.iter().find(|t| t.id == id) else {
            let (user, name) = id.split_once('!').unwrap_or((id, ""));
            return Err(ApiError::new(
                401,
                format!("no such token '{name}' for user '{user}'"),
            ));
        };
        if tok.secret != secret {
            return Err(ApiError::new(401, "invalid token value!"));
        }
        // pve-access-control RPCEnvironment::permissions: a token without privsep has its
        // user's privileges; with privsep, its own ACLs intersected with the user's.
        let (user, _) = tok.id.split_once('!').unwrap_or((&tok.id, ""));
        let user_grant = cfg.users.iter().find(|u| u.userid == user).map(|u| Grant {
            privs: u.privs.clone(),
            acl: u.acl.clone(),
        });
        let own = Grant {
            privs: tok.privs.clone(),
            acl: tok.acl.clone(),
        };
        let (own, owner) = match (tok.privsep, user_grant) {
            (false, Some(u)) => (u, None),
            (true, Some(u)) => (own, Some(u)),
            (_, None) => (own, None),
        };
        return Ok(Identity {
            userid: tok.id.clone(),
            own,
            owner,
            is_token: true,
            pools,
        });
    }
    let Some(ticket) = cookie(headers, "PVEAuthCookie") else {
        return Err(ApiError::new(401, "No ticket"));
    };
    let Some((userid, csrf)) = tickets.lookup(&ticket) else {
        return Err(ApiError::new(401, "permission denied - invalid PVE ticket"));
    };
    if write {
        let sent = headers
            .get("csrfpreventiontoken")
            .and_then(|h| h.to_str().ok());
        if sent != Some(csrf.as_str()) {
            return Err(ApiError::new(401, "Permission denied - invalid csrf token"));
        }
    }
    let user = cfg.users.iter().find(|u| u.userid == userid);
    Ok(Identity {
        own: Grant {
            privs: user.and_then(|u| u.privs.clone()),
            acl: user.map(|u| u.acl.clone()).unwrap_or_default(),
        },
        owner: None,
        userid,
        is_token: false,
        pools,
    })
}

fn fill_path(template: &str, params: &std::collections::BTreeMap<String, String>) -> String {
    let mut out = template.to_string();
    for (k, v) in params {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

/// Evaluates a schema `permissions.check` expression.
pub fn check(
    who: &Identity,
    expr: &Value,
    params: &std::collections::BTreeMap<String, String>,
) -> ApiResult<()> {
    let Some(arr) = expr.as_array() else {
        return Ok(());
    };
    match arr.first().and_then(Value::as_str) {
        Some("perm") => {
            let path = fill_path(arr.get(1).and_then(Value::as_str).unwrap_or("/"), params);
            let privs: Vec<&str> = arr
                .get(2)
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            // Options follow as key/value pairs: `any => 1`, `require_param => NAME`.
            let opts: Vec<&Value> = arr.iter().skip(3).collect();
            let opt = |k: &str| {
                opts.chunks(2)
                    .find(|c| c[0].as_str() == Some(k))
                    .and_then(|c| c.get(1).copied())
            };
            let any = opt("any").is_some();
            // RPCEnvironment::exec_api2_perm_check: a missing required parameter fails
            // the check with a bare raise_perm_exc().
            if let Some(p) = opt("require_param").and_then(Value::as_str) {
                if !params.contains_key(p) {
                    return Err(ApiError::perm_bare());
                }
            }
            require(who, &path, &privs, any)
        }
        Some("and") => arr[1..].iter().try_for_each(|c| check(who, c, params)),
        // exec_api2_perm_check: no alternative held -> raise_perm_exc() without details.
        Some("or") => {
            if arr[1..].iter().any(|c| check(who, c, params).is_ok()) {
                Ok(())
            } else {
                Err(ApiError::perm_bare())
            }
        }
        // userid-group/userid-param and friends concern user management, not simulated.
        _ => Ok(()),
    }
}

/// Requires all (or, with `any`, one) of `privs` on `path`.
/// The privilege PVE asks for to set or delete one VM config option
/// (qemu-server's check_vm_modify_config_perm, by option family).
pub fn config_privilege(key: &str) -> &'static str {
    let family = key.trim_end_matches(|c: char| c.is_ascii_digit());
    match family {
        "scsi" | "virtio" | "sata" | "ide" | "efidisk" | "tpmstate" | "unused" => "VM.Config.Disk",
        "cores" | "sockets" | "cpu" | "cpulimit" | "cpuunits" | "vcpus" | "numa" | "affinity" => {
            "VM.Config.CPU"
        }
        "memory" | "balloon" | "shares" => "VM.Config.Memory",
        "net" => "VM.Config.Network",
        "scsihw" | "vga" | "machine" | "bios" | "acpi" | "kvm" | "tablet" | "keyboard"
        | "ostype" => "VM.Config.HWType",
        // name, description, tags, onboot, protection, hotplug, boot, ...
        _ => "VM.Config.Options",
    }
}

pub fn require(who: &Identity, path: &str, privs: &[&str], any: bool) -> ApiResult<()> {
    if any {
        if privs.is_empty() || privs.iter().any(|p| who.has(path, p)) {
            return Ok(());
        }
        return Err(ApiError::perm(path, &privs.join("|")));
    }
    for p in privs {
        if !who.has(path, p) {
            return Err(ApiError::perm(path, p));
        }
    }
    Ok(())
}
