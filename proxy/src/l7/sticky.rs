//! Stickiness cookies that a client cannot forge: a target group's cookie names a target, a
//! forward action's cookie names a target group, and both are signed with HMAC-SHA256.
//!
//! Values are sealed and opened by [`crate::cookie_signing`] (format, keys, rotation).
//!
//! A cookie that is malformed or fails its MAC (`invalid`), is past its expiry (`expired`),
//! or names a target that is not a healthy member of the group, or a group no longer in the
//! action with a weight above 0 (`unknown_target`), is ignored: the request is balanced as if
//! it had none, a fresh cookie is set, and the rejection is counted. Raw cookie values are
//! never logged.

use std::fmt::Write as _;
use std::time::Duration;

use berth_config::model::{Forward, TargetGroup};
use http::header::{self, HeaderMap, HeaderValue};

use super::headers::cookie;
use crate::cookie_signing::{open_now, ring, unix_now, Rejection, KIND_GROUP, KIND_TARGET};
use crate::group::Group;
use crate::health::Status;
use crate::metrics as m;
use crate::target::{fnv1a, now_ms, Target};

/// The target a request's stickiness cookie names, as a sticky id for the balancer, when the
/// cookie is valid and the target a healthy member of `group`; otherwise `None`, and a cookie
/// that was there is counted as rejected.
pub fn requested_target(cfg: &TargetGroup, group: &Group, headers: &HeaderMap) -> Option<String> {
    let s = cfg.stickiness.as_ref()?;
    let value = cookie(headers, &s.cookie_name)?;
    let verdict = open_now(value, KIND_TARGET, group.name.as_bytes()).and_then(|id| {
        let id = format!("{id:016x}");
        let now = now_ms();
        let routable = group.targets.load().list.iter().any(|t| {
            t.sticky_id == id
                && !t.is_draining()
                && t.status() == Status::Healthy
                && !t.is_ejected(now)
        });
        routable.then_some(id).ok_or(Rejection::UnknownTarget)
    });
    verdict
        .map_err(|why| {
            tracing::debug!(target_group = %group.name, reason = why.as_str(), "stickiness cookie ignored");
            metrics::counter!(m::STICKY_COOKIE_REJECTED, "target_group" => group.name.clone(), "reason" => why.as_str())
                .increment(1);
        })
        .ok()
}

/// The `Set-Cookie` for a response from `target`: on every response for `lb_cookie`, with
/// a fresh expiry; for `app_cookie` only on a response that sets the application's cookie.
/// `None` when the group has no stickiness.
pub fn target_cookie(
    cfg: &TargetGroup,
    target: &Target,
    response: &HeaderMap,
    https: bool,
) -> Option<HeaderValue> {
    let s = cfg.stickiness.as_ref()?;
    if let Some(app) = &s.app_cookie {
        let sets_app_cookie = response
            .get_all(header::SET_COOKIE)
            .iter()
            .any(|v| sets_cookie(v.as_bytes(), app));
        if !sets_app_cookie {
            return None;
        }
    }
    let id = u64::from_str_radix(&target.sticky_id, 16).ok()?;
    set_cookie(
        &s.cookie_name,
        KIND_TARGET,
        id,
        cfg.name.as_bytes(),
        s.duration,
        https,
    )
}

/// Whether a `Set-Cookie` value sets cookie `name`.
fn sets_cookie(value: &[u8], name: &str) -> bool {
    let trimmed = value.trim_ascii_start();
    trimmed.len() > name.len()
        && trimmed.starts_with(name.as_bytes())
        && trimmed[name.len()..].trim_ascii_start().first() == Some(&b'=')
}

/// The target group a forward action sends this request to, and the group cookie to set.
/// Without group stickiness: a weighted pick and no cookie. With it: the group the request's
/// valid cookie names while the action still lists it with a weight above 0, otherwise a
/// weighted pick (a cookie that was there is counted as rejected, by `listener`); either way
/// a cookie with a fresh expiry.
pub fn pick_group<'a>(
    forward: &'a Forward,
    headers: &HeaderMap,
    listener: &str,
    https: bool,
) -> (&'a str, Option<HeaderValue>) {
    let Some(s) = forward.stickiness.as_ref() else {
        return (crate::forward::pick_group(&forward.groups), None);
    };
    let kept = cookie(headers, &s.cookie_name).and_then(|value| {
        let verdict = open_now(value, KIND_GROUP, s.scope.as_bytes()).and_then(|id| {
            forward
                .groups
                .iter()
                .find(|g| g.weight > 0 && fnv1a(g.target_group.as_bytes()) == id)
                .map(|g| g.target_group.as_str())
                .ok_or(Rejection::UnknownTarget)
        });
        verdict
            .map_err(|why| {
                tracing::debug!(listener, scope = %s.scope, reason = why.as_str(), "group stickiness cookie ignored");
                metrics::counter!(m::GROUP_STICKY_COOKIE_REJECTED, "listener" => listener.to_owned(), "reason" => why.as_str())
                    .increment(1);
            })
            .ok()
    });
    let name = kept.unwrap_or_else(|| crate::forward::pick_group(&forward.groups));
    let cookie = set_cookie(
        &s.cookie_name,
        KIND_GROUP,
        fnv1a(name.as_bytes()),
        s.scope.as_bytes(),
        s.duration,
        https,
    );
    (name, cookie)
}

/// `name=<signed value>; Max-Age=…; Expires=…; Path=/; HttpOnly`, and on https listeners
/// `; Secure; SameSite=None` (one cookie plays the roles of ALB's AWSALB and AWSALBCORS).
fn set_cookie(
    name: &str,
    kind: u8,
    id: u64,
    context: &[u8],
    duration: Duration,
    https: bool,
) -> Option<HeaderValue> {
    let now = unix_now();
    let secs = duration.as_secs();
    let expiry = u32::try_from(now + secs).unwrap_or(u32::MAX);
    let value = ring().current.seal(kind, expiry, id, context);
    let mut out = String::with_capacity(name.len() + value.len() + 112);
    let expires = chrono::DateTime::from_timestamp(i64::from(expiry), 0)?;
    // Writing to a String cannot fail.
    let _ = write!(
        out,
        "{name}={value}; Max-Age={secs}; Expires={}; Path=/; HttpOnly",
        expires.format("%a, %d %b %Y %H:%M:%S GMT")
    );
    if https {
        out.push_str("; Secure; SameSite=None");
    }
    HeaderValue::try_from(out).ok()
}

/// Adds a `Set-Cookie` to a response, when there is one.
pub fn append(headers: &mut HeaderMap, cookie: Option<HeaderValue>) {
    if let Some(c) = cookie {
        headers.append(header::SET_COOKIE, c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_cookie_carries_lifetime_and_https_attributes() {
        let c = set_cookie("N", KIND_TARGET, 1, b"g", Duration::from_secs(60), true).unwrap();
        let c = c.to_str().unwrap();
        assert!(c.starts_with("N="), "{c}");
        assert!(
            c.contains("; Max-Age=60; Expires=") && c.contains(" GMT; Path=/; HttpOnly"),
            "{c}"
        );
        assert!(c.ends_with("; HttpOnly; Secure; SameSite=None"), "{c}");
        let c = set_cookie("N", KIND_TARGET, 1, b"g", Duration::from_secs(60), false).unwrap();
        assert!(c.to_str().unwrap().ends_with("; HttpOnly"));
    }

    #[test]
    fn app_cookie_is_recognised_in_set_cookie() {
        assert!(sets_cookie(b"SESSION=abc; Path=/", "SESSION"));
        assert!(sets_cookie(b" SESSION =abc", "SESSION"));
        assert!(!sets_cookie(b"SESSIONX=abc", "SESSION"));
        assert!(!sets_cookie(b"OTHER=SESSION", "SESSION"));
        assert!(!sets_cookie(b"SESSION", "SESSION"));
    }
}
