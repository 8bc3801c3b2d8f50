//! Scheduled actions: from each occurrence of its schedule on, an action sets the service's
//! minimum and/or maximum capacity (Application Auto Scaling semantics). The limits in force
//! are those of the most recent occurrence, so a restarted scaler finds the same limits.
//!
//! `cron` and `at` are evaluated in the action's time zone (`croner` over `chrono-tz`): a
//! `cron(0 8 * * *)` in Europe/Paris fires at 08:00 local time on both sides of a DST change;
//! an `at()` inside a skipped hour fires at the end of the gap, and in a repeated hour at its
//! first instance. `rate()` counts from the scaler's start.

use berth_config::model::{Schedule, ScheduledAction};
use chrono::{DateTime, LocalResult, TimeZone, Utc};

/// The last time at or before `now` the action fired; `None` if it has not yet.
pub fn last_occurrence(
    a: &ScheduledAction,
    now: DateTime<Utc>,
    started: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    match &a.schedule {
        Schedule::Cron(cron) => cron
            .find_previous_occurrence(&now.with_timezone(&a.timezone), true)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        Schedule::At(naive) => {
            let at = match a.timezone.from_local_datetime(naive) {
                LocalResult::Single(t) => t,
                LocalResult::Ambiguous(first, _) => first,
                LocalResult::None => {
                    // In a DST gap: the first valid minute after it.
                    let mut probe = *naive;
                    let mut found = None;
                    for _ in 0..(24 * 60) {
                        probe += chrono::Duration::minutes(1);
                        if let LocalResult::Single(t) | LocalResult::Ambiguous(t, _) =
                            a.timezone.from_local_datetime(&probe)
                        {
                            found = Some(t);
                            break;
                        }
                    }
                    found?
                }
            }
            .with_timezone(&Utc);
            (at <= now).then_some(at)
        }
        Schedule::Rate(period) => {
            let period = chrono::Duration::from_std(*period).ok()?;
            let elapsed = now - started;
            if period <= chrono::Duration::zero() || elapsed < period {
                return None;
            }
            let n = elapsed.num_milliseconds() / period.num_milliseconds().max(1);
            Some(started + period * i32::try_from(n).ok()?)
        }
    }
}

/// A limit set by a scheduled action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    /// The minimum or maximum capacity the action set.
    pub value: u32,
    /// The action's name.
    pub action: String,
    /// When the action fired.
    pub at: DateTime<Utc>,
}

/// The minimum and maximum set by the most recent actions (each independently).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Limits {
    /// Minimum, if an action has set one.
    pub min: Option<Limit>,
    /// Maximum, if an action has set one.
    pub max: Option<Limit>,
}

/// The limits in force at `now`.
pub fn limits(actions: &[ScheduledAction], now: DateTime<Utc>, started: DateTime<Utc>) -> Limits {
    let mut out = Limits::default();
    for a in actions {
        let Some(at) = last_occurrence(a, now, started) else {
            continue;
        };
        let newer = |l: &Option<Limit>| l.as_ref().is_none_or(|l| at > l.at);
        if let Some(v) = a.min_capacity {
            if newer(&out.min) {
                out.min = Some(Limit {
                    value: v,
                    action: a.name.clone(),
                    at,
                });
            }
        }
        if let Some(v) = a.max_capacity {
            if newer(&out.max) {
                out.max = Some(Limit {
                    value: v,
                    action: a.name.clone(),
                    at,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_config::validate::parse_schedule;

    fn action(
        name: &str,
        expr: &str,
        tz: &str,
        min: Option<u32>,
        max: Option<u32>,
    ) -> ScheduledAction {
        ScheduledAction {
            name: name.into(),
            expression: expr.into(),
            schedule: parse_schedule(expr).unwrap(),
            timezone: tz.parse().unwrap(),
            min_capacity: min,
            max_capacity: max,
        }
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_in_a_time_zone_across_dst() {
        // 08:00 Paris every day. Paris moves from UTC+1 to UTC+2 on 2024-03-31.
        let a = action("morning", "cron(0 8 * * *)", "Europe/Paris", Some(5), None);
        let start = utc("2024-01-01T00:00:00Z");
        assert_eq!(
            last_occurrence(&a, utc("2024-03-30T12:00:00Z"), start),
            Some(utc("2024-03-30T07:00:00Z")),
            "winter: 08:00 CET = 07:00 UTC"
        );
        assert_eq!(
            last_occurrence(&a, utc("2024-03-31T12:00:00Z"), start),
            Some(utc("2024-03-31T06:00:00Z")),
            "summer: 08:00 CEST = 06:00 UTC"
        );
        assert_eq!(
            last_occurrence(&a, utc("2024-03-31T05:59:59Z"), start),
            Some(utc("2024-03-30T07:00:00Z")),
            "just before the first summer occurrence"
        );
        // Autumn: back to UTC+1 on 2024-10-27.
        assert_eq!(
            last_occurrence(&a, utc("2024-10-27T12:00:00Z"), start),
            Some(utc("2024-10-27T07:00:00Z"))
        );
    }

    #[test]
    fn cron_in_the_skipped_hour_fires_once_nonetheless() {
        // 02:30 New York does not exist on 2024-03-10. The next day it does again.
        let a = action(
            "night",
            "cron(30 2 * * *)",
            "America/New_York",
            Some(1),
            None,
        );
        let start = utc("2024-01-01T00:00:00Z");
        let before = last_occurrence(&a, utc("2024-03-10T06:00:00Z"), start);
        let after = last_occurrence(&a, utc("2024-03-11T12:00:00Z"), start);
        assert_eq!(after, Some(utc("2024-03-11T06:30:00Z")), "02:30 EDT");
        assert!(before.is_some());
    }

    #[test]
    fn aas_six_field_cron_with_year() {
        let a = action("weekday", "cron(0 18 ? * MON-FRI *)", "UTC", None, Some(3));
        // 2024-06-08 is a Saturday: last was Friday 18:00.
        assert_eq!(
            last_occurrence(&a, utc("2024-06-08T12:00:00Z"), utc("2024-01-01T00:00:00Z")),
            Some(utc("2024-06-07T18:00:00Z"))
        );
    }

    #[test]
    fn at_fires_once_in_its_zone() {
        let start = utc("2024-01-01T00:00:00Z");
        // (expression, zone, now, last occurrence, why)
        #[rustfmt::skip]
        let cases = [
            ("at(2024-06-01T09:00:00)", "Asia/Tokyo", "2024-06-01T00:00:00Z", Some("2024-06-01T00:00:00Z"), "09:00 JST is 00:00 UTC"),
            ("at(2024-06-01T09:00:00)", "Asia/Tokyo", "2024-05-31T23:59:59Z", None, "not yet"),
            ("at(2024-06-01T09:00:00)", "Asia/Tokyo", "2025-01-01T00:00:00Z", Some("2024-06-01T00:00:00Z"), "once, long after"),
            ("at(2024-03-31T02:30:00)", "Europe/Paris", "2024-04-01T00:00:00Z", Some("2024-03-31T01:00:00Z"),
             "in Paris' spring gap 02:30 does not exist: fires at 03:00 CEST = 01:00 UTC"),
            ("at(2024-10-27T02:30:00)", "Europe/Paris", "2024-10-28T00:00:00Z", Some("2024-10-27T00:30:00Z"),
             "in the autumn repeat 02:30 happens twice: the first one (CEST, 00:30 UTC)"),
        ];
        for (expression, zone, now, want, why) in cases {
            let a = action("at", expression, zone, Some(10), None);
            assert_eq!(last_occurrence(&a, utc(now), start), want.map(utc), "{why}");
        }
    }

    #[test]
    fn rate_counts_from_start() {
        let a = action("tick", "rate(5 minutes)", "UTC", Some(2), None);
        let start = utc("2024-01-01T00:00:00Z");
        assert_eq!(
            last_occurrence(&a, utc("2024-01-01T00:04:59Z"), start),
            None
        );
        assert_eq!(
            last_occurrence(&a, utc("2024-01-01T00:05:00Z"), start),
            Some(utc("2024-01-01T00:05:00Z"))
        );
        assert_eq!(
            last_occurrence(&a, utc("2024-01-01T00:12:00Z"), start),
            Some(utc("2024-01-01T00:10:00Z"))
        );
    }

    #[test]
    fn latest_action_wins_min_and_max_independently() {
        let up = action("up", "cron(0 8 * * *)", "UTC", Some(10), Some(50));
        let down = action("down", "cron(0 20 * * *)", "UTC", Some(2), None);
        let start = utc("2024-01-01T00:00:00Z");
        let l = limits(
            &[up.clone(), down.clone()],
            utc("2024-06-01T12:00:00Z"),
            start,
        );
        assert_eq!(
            l.min.as_ref().map(|m| (m.value, m.action.as_str())),
            Some((10, "up"))
        );
        assert_eq!(l.max.as_ref().map(|m| m.value), Some(50));
        let l = limits(&[up, down], utc("2024-06-01T21:00:00Z"), start);
        assert_eq!(
            l.min.as_ref().map(|m| (m.value, m.action.as_str())),
            Some((2, "down"))
        );
        assert_eq!(
            l.max.as_ref().map(|m| m.value),
            Some(50),
            "down does not touch max"
        );
        assert_eq!(
            limits(&[], utc("2024-06-01T21:00:00Z"), start),
            Limits::default()
        );
    }
}
