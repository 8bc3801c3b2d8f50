//! Parsers of single values, shared by the sections and public for the binaries: durations,
//! health check matchers, CIDRs, wildcard patterns and scaling schedules.

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

use crate::model::{Matcher, Schedule, Wildcard};

/// Parses a duration such as `"30s"`, `"1m30s"`, `"250ms"` or `"1d"`.
///
/// The error reads `invalid duration "3x": ...`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

/// Parses a health check matcher: a status code (`"200"`), a range (`"200-399"`) or a
/// comma-separated list of both (`"200,204,300-399"`), codes 100..=599.
pub fn parse_matcher(text: &str) -> Result<Matcher, String> {
    let bad = |why: String| format!("invalid matcher {text:?}: {why}");
    let code = |s: &str| -> Result<u16, String> {
        let s = s.trim();
        let n: u16 = s
            .parse()
            .map_err(|_| bad(format!("{s:?} is not a status code")))?;
        if (100..=599).contains(&n) {
            Ok(n)
        } else {
            Err(bad(format!("status code {n} is outside 100..=599")))
        }
    };
    let mut ranges = Vec::new();
    for part in text.split(',') {
        if part.trim().is_empty() {
            return Err(bad("empty entry".to_owned()));
        }
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo > hi {
                    return Err(bad(format!("range {lo}-{hi} is reversed")));
                }
                ranges.push((lo, hi));
            }
            None => {
                let n = code(part)?;
                ranges.push((n, n));
            }
        }
    }
    Ok(Matcher(ranges))
}

/// Parses `1.2.3.0/24`, `::1/128`, or a bare address (a single-host network).
pub(super) fn parse_cidr(s: &str) -> Option<IpNet> {
    let s = s.trim();
    s.parse::<IpNet>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(IpNet::from))
}

/// Escapes glob syntax other than `*` and `?`.
pub(super) fn escape_wildcard(pattern: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    for c in pattern.chars() {
        if matches!(c, '[' | ']' | '{' | '}' | '\\' | '!' | ',') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Compiles a pattern with globset.
pub(super) fn compile(
    pattern: &str,
    glob_text: &str,
    case_insensitive: bool,
    literal_separator: bool,
) -> Result<Wildcard, String> {
    // Without glob syntax the pattern is the text to equal. Non-ASCII patterns keep the glob
    // matcher, whose case-insensitivity is Unicode's.
    if glob_text == pattern
        && pattern.is_ascii()
        && !pattern.contains(['*', '?', '[', ']', '{', '}', '\\'])
    {
        return Ok(Wildcard {
            pattern: pattern.to_owned(),
            matcher: None,
            case_insensitive,
        });
    }
    globset::GlobBuilder::new(glob_text)
        .case_insensitive(case_insensitive)
        .literal_separator(literal_separator)
        .backslash_escape(true)
        .build()
        .map(|g| Wildcard {
            pattern: pattern.to_owned(),
            matcher: Some(g.compile_matcher()),
            case_insensitive,
        })
        .map_err(|e| format!("invalid pattern {pattern:?}: {}", e.kind()))
}

/// Parses a scheduled action's schedule, as Application Auto Scaling writes them:
///
/// * `cron(m h dom mon dow)` — five fields (croner syntax: `*`, `,`, `-`, `/`, `?`, `L`, `#`,
///   `MON`..`SUN`, `JAN`..`DEC`); a sixth field, the year, is accepted only as `*`;
/// * `at(yyyy-mm-ddThh:mm:ss)` — once, local time in the action's time zone;
/// * `rate(N minute[s]|hour[s]|day[s])` — every N units from the scaler's start.
pub fn parse_schedule(text: &str) -> Result<Schedule, String> {
    let t = text.trim();
    let inner = |prefix: &str| {
        t.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(')'))
            .map(str::trim)
    };
    if let Some(expr) = inner("cron(") {
        let mut fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() == 6 {
            if fields[5] != "*" {
                return Err(format!(
                    "invalid cron expression {expr:?}: the year field must be \"*\""
                ));
            }
            fields.pop();
        }
        if fields.len() != 5 {
            return Err(format!(
                "invalid cron expression {expr:?}: expected 5 fields (minute hour day-of-month month day-of-week)"
            ));
        }
        let five = fields.join(" ");
        return croner::parser::CronParser::builder()
            .seconds(croner::parser::Seconds::Disallowed)
            .dom_and_dow(false)
            .build()
            .parse(&five)
            .map(|c| Schedule::Cron(Box::new(c)))
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"));
    }
    if let Some(at) = inner("at(") {
        return chrono::NaiveDateTime::parse_from_str(at, "%Y-%m-%dT%H:%M:%S")
            .map(Schedule::At)
            .map_err(|e| format!("invalid at() time {at:?}: {e} (expected yyyy-mm-ddThh:mm:ss)"));
    }
    if let Some(rate) = inner("rate(") {
        let bad = || {
            format!("invalid rate {rate:?} (expected e.g. \"5 minutes\", \"1 hour\", \"2 days\")")
        };
        let (n, unit) = rate.split_once(char::is_whitespace).ok_or_else(bad)?;
        let n: u64 = n.trim().parse().map_err(|_| bad())?;
        let unit_secs = match unit.trim() {
            "minute" | "minutes" => 60,
            "hour" | "hours" => 3600,
            "day" | "days" => 86_400,
            _ => return Err(bad()),
        };
        if n == 0 {
            return Err(format!("invalid rate {rate:?}: must be at least 1"));
        }
        return Ok(Schedule::Rate(Duration::from_secs(
            n.saturating_mul(unit_secs),
        )));
    }
    Err(format!(
        "invalid schedule {t:?} (expected cron(...), at(...) or rate(...))"
    ))
}

/// `n` seconds.
pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}
