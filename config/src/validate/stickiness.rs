//! Stickiness: the signing key (`proxy.stickiness_key` / `stickiness_key_file`), a target
//! group's `stickiness` (`lb_cookie` or `app_cookie`), and a forward action's group-level
//! `stickiness`.

use base64::Engine;

use super::values::secs;
use super::Checker;
use crate::model::{Action, GroupStickiness, Stickiness, StickinessKey, APP_STICKY_COOKIE};
use crate::raw::{RawForwardStickiness, RawProxy, RawStickiness};

/// Cookie name prefixes an application cookie may not use: ALB's and berth's own.
const RESERVED_PREFIXES: &[&str] = &["AWSALB", "BERTH"];

impl Checker<'_> {
    /// `proxy.stickiness_key` or `proxy.stickiness_key_file`: base64 (standard or URL-safe,
    /// padded or not) of exactly 32 bytes.
    pub(super) fn stickiness_key(&mut self, p: &RawProxy) -> Option<StickinessKey> {
        let (text, path) = match (&p.stickiness_key, &p.stickiness_key_file) {
            (None, None) => return None,
            (Some(_), Some(_)) => {
                self.error(
                    "proxy.stickiness_key_file",
                    "set either stickiness_key or stickiness_key_file, not both",
                );
                return None;
            }
            (Some(k), None) => (k.clone(), "proxy.stickiness_key"),
            (None, Some(f)) => {
                let file = self.resolve(f);
                match std::fs::read_to_string(&file) {
                    Ok(t) => (t, "proxy.stickiness_key_file"),
                    Err(e) => {
                        self.error(
                            "proxy.stickiness_key_file",
                            format!("cannot read {}: {e}", file.display()),
                        );
                        return None;
                    }
                }
            }
        };
        let text = text.trim();
        let decoded = [
            &base64::engine::general_purpose::STANDARD,
            &base64::engine::general_purpose::STANDARD_NO_PAD,
            &base64::engine::general_purpose::URL_SAFE,
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ]
        .iter()
        .find_map(|e| e.decode(text).ok());
        match decoded {
            None => {
                self.error(path, "not valid base64 (expected 32 random bytes in base64, e.g. from `openssl rand -base64 32`)");
                None
            }
            Some(bytes) => match <[u8; 32]>::try_from(bytes.as_slice()) {
                Ok(k) => Some(StickinessKey(k)),
                Err(_) => {
                    self.error(
                        path,
                        format!(
                            "must be exactly 32 bytes once base64-decoded, is {} bytes",
                            bytes.len()
                        ),
                    );
                    None
                }
            },
        }
    }

    /// A target group's `stickiness` at `sp`; `None` when disabled.
    pub(super) fn target_stickiness(&mut self, s: &RawStickiness, sp: &str) -> Option<Stickiness> {
        let duration = self.duration_in(
            &s.duration,
            &format!("{sp}.duration"),
            secs(86_400),
            secs(1),
            secs(7 * 86_400),
            "between 1s and 7d",
        );
        let app = match s.kind.as_deref() {
            None | Some("lb_cookie") => false,
            Some("app_cookie") => true,
            Some(other) => {
                self.error(
                    &format!("{sp}.type"),
                    format!("unknown type {other:?} (expected \"lb_cookie\" or \"app_cookie\")"),
                );
                false
            }
        };
        let np = format!("{sp}.cookie_name");
        let cookie_name = match (&s.cookie_name, app) {
            (Some(n), _) => n.clone(),
            (None, false) => "BERTHSTICKY".to_owned(),
            (None, true) => {
                self.error(
                    &np,
                    "required with type = \"app_cookie\": the application's cookie name",
                );
                String::new()
            }
        };
        let missing = app && cookie_name.is_empty();
        if !missing && !cookie_name_valid(&cookie_name) {
            self.error(&np, format!("invalid cookie name {cookie_name:?}"));
        }
        if app {
            let upper = cookie_name.to_ascii_uppercase();
            if let Some(prefix) = RESERVED_PREFIXES.iter().find(|p| upper.starts_with(**p)) {
                self.error(
                    &np,
                    format!(
                        "{cookie_name:?} is reserved: names starting with {prefix} are the load balancer's own"
                    ),
                );
            }
        }
        let (cookie_name, app_cookie) = if app {
            (APP_STICKY_COOKIE.to_owned(), Some(cookie_name))
        } else {
            (cookie_name, None)
        };
        s.enabled.unwrap_or(true).then_some(Stickiness {
            duration,
            cookie_name,
            app_cookie,
        })
    }

    /// A forward action's `stickiness` at `sp`; `None` when disabled. Its scope is set by
    /// the listener ([`scope_forward`]).
    pub(super) fn forward_stickiness(
        &mut self,
        s: &RawForwardStickiness,
        sp: &str,
    ) -> Option<GroupStickiness> {
        let duration = self.duration_in(
            &s.duration,
            &format!("{sp}.duration"),
            secs(3600),
            secs(1),
            secs(7 * 86_400),
            "between 1s and 7d",
        );
        s.enabled.unwrap_or(true).then_some(GroupStickiness {
            duration,
            scope: String::new(),
            cookie_name: String::new(),
        })
    }
}

/// Names the action for its group stickiness cookie: `<listener>/<priority>` or
/// `<listener>/default`.
pub(super) fn scope_forward(action: &mut Action, listener: &str, rule: Option<u32>) {
    if let Action::Forward(f) = action {
        if let Some(s) = f.stickiness.as_mut() {
            s.scope = match rule {
                Some(p) => format!("{listener}/{p}"),
                None => format!("{listener}/default"),
            };
            s.cookie_name = format!("BERTHTG{:08x}", fnv1a32(s.scope.as_bytes()));
        }
    }
}

/// FNV-1a, 32 bit: a short stable hash for cookie names.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A cookie name is an RFC 6265 token: visible ASCII without separators.
fn cookie_name_valid(name: &str) -> bool {
    !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(
                    b,
                    b'(' | b')'
                        | b'<'
                        | b'>'
                        | b'@'
                        | b','
                        | b';'
                        | b':'
                        | b'\\'
                        | b'"'
                        | b'/'
                        | b'['
                        | b']'
                        | b'?'
                        | b'='
                        | b'{'
                        | b'}'
                )
        })
}
