//! Pure scheduling functions: local wall-clock times to instants across DST changes, quiet
//! hours, reminder offsets and templates, and when a daily delivery is due. No I/O here, so
//! every edge (a local time that does not exist, or that occurs twice) is unit-tested.

use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

use crate::domain::Invalid;

/// The instant a local wall-clock time names in `tz`.
///
/// A time that occurs twice (clocks going back) is its first occurrence; a time that does not
/// exist (clocks going forward) is the first instant after the gap, so nothing scheduled in a
/// gap is lost or sent early.
pub fn resolve_local(tz: Tz, local: NaiveDateTime) -> DateTime<Utc> {
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => t.with_timezone(&Utc),
        LocalResult::Ambiguous(first, _) => first.with_timezone(&Utc),
        LocalResult::None => {
            // Walk forward to the end of the gap (gaps are whole minutes, at most a few hours).
            let mut probe = local;
            for _ in 0..(24 * 60) {
                probe += chrono::Duration::minutes(1);
                let probe_minute = probe.with_second(0).unwrap_or(probe);
                match tz.from_local_datetime(&probe_minute) {
                    LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                        return t.with_timezone(&Utc);
                    }
                    LocalResult::None => {}
                }
            }
            // Unreachable for real zones; fall back to reading the time as UTC.
            Utc.from_utc_datetime(&local)
        }
    }
}

/// Whether a local time of day falls in the quiet window `[start, end)`, which wraps past
/// midnight when `start > end` (21:00-08:00).
pub fn in_quiet_window(local: NaiveTime, start: NaiveTime, end: NaiveTime) -> bool {
    if start <= end {
        start <= local && local < end
    } else {
        local >= start || local < end
    }
}

/// If `at` falls inside the quiet window in `tz`, the instant the window ends there; `None`
/// when `at` is outside it.
pub fn quiet_until(
    at: DateTime<Utc>,
    tz: Tz,
    start: NaiveTime,
    end: NaiveTime,
) -> Option<DateTime<Utc>> {
    let local = at.with_timezone(&tz);
    let time = local.time();
    if !in_quiet_window(time, start, end) {
        return None;
    }
    let date = local.date_naive();
    // Inside a window that wraps midnight and started today, it ends tomorrow.
    let end_date = if start > end && time >= start {
        date.succ_opt()?
    } else {
        date
    };
    Some(resolve_local(tz, end_date.and_time(end)))
}

/// A reminder offset: `<n>m`, `<n>h` or `<n>d` (up to a year).
pub fn parse_offset(raw: &str) -> Result<Duration, Invalid> {
    let bad = || {
        Invalid(format!(
            "`{}` is not an offset such as 30m, 2h or 1d",
            crate::domain::truncate(raw, 20)
        ))
    };
    let raw = raw.trim();
    let (digits, unit) = raw.split_at(raw.len().saturating_sub(1));
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_secs: u64 = match unit {
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    // Checked: a huge count must be refused, not wrap around to a small offset.
    let secs = n.checked_mul(unit_secs).ok_or_else(|| {
        Invalid(format!(
            "`{}` is more than 366 days",
            crate::domain::truncate(raw, 30)
        ))
    })?;
    if n == 0 || secs > 366 * 86_400 {
        return Err(bad());
    }
    Ok(Duration::from_secs(secs))
}

/// Renders a reminder template in the recipient's zone: `{{name}}`, `{{time}}` like
/// `3:30 PM`, `{{date}}` like `Tuesday, March 3`.
pub fn render(template: &str, name: Option<&str>, at: DateTime<Utc>, tz: Tz) -> String {
    let local = at.with_timezone(&tz);
    let (pm, hour) = local.hour12();
    let time = format!(
        "{hour}:{:02} {}",
        local.minute(),
        if pm { "PM" } else { "AM" }
    );
    let date = format!(
        "{}, {} {}",
        local.format("%A"),
        local.format("%B"),
        local.day()
    );
    template
        .replace("{{name}}", name.unwrap_or("there"))
        .replace("{{time}}", &time)
        .replace("{{date}}", &date)
}

/// The first local date a daily delivery at `send_at_local` is due, for a subscription made at
/// `now`: today if that time is still ahead, else tomorrow.
pub fn first_daily_date(now: DateTime<Utc>, tz: Tz, send_at_local: NaiveTime) -> NaiveDate {
    let local = now.with_timezone(&tz);
    let today = local.date_naive();
    if local.time() < send_at_local {
        today
    } else {
        today.succ_opt().unwrap_or(today)
    }
}

/// The instant a local date ends in `tz` (the next local midnight): a daily message expires
/// then, so one caught up after downtime never arrives the next day.
pub fn end_of_local_day(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let next = date.succ_opt().unwrap_or(date);
    resolve_local(tz, next.and_time(NaiveTime::MIN))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ny() -> Tz {
        chrono_tz::America::New_York
    }

    fn t(h: u32, m: u32) -> NaiveTime {
        NaiveTime::from_hms_opt(h, m, 0).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn local(date: &str, h: u32, m: u32) -> NaiveDateTime {
        date.parse::<NaiveDate>().unwrap().and_time(t(h, m))
    }

    #[test]
    fn a_local_time_in_the_spring_gap_is_the_first_instant_after_it() {
        // 2026-03-08: New York skips from 02:00 EST to 03:00 EDT.
        assert_eq!(
            resolve_local(ny(), local("2026-03-08", 2, 30)),
            utc("2026-03-08T07:00:00Z")
        );
        assert_eq!(
            resolve_local(ny(), local("2026-03-08", 1, 59)),
            utc("2026-03-08T06:59:00Z")
        );
        assert_eq!(
            resolve_local(ny(), local("2026-03-08", 3, 0)),
            utc("2026-03-08T07:00:00Z")
        );
    }

    #[test]
    fn a_local_time_that_occurs_twice_is_its_first_occurrence() {
        // 2026-11-01: New York goes back from 02:00 EDT to 01:00 EST; 01:30 happens twice.
        assert_eq!(
            resolve_local(ny(), local("2026-11-01", 1, 30)),
            utc("2026-11-01T05:30:00Z")
        );
        assert_eq!(
            resolve_local(ny(), local("2026-11-01", 2, 30)),
            utc("2026-11-01T07:30:00Z")
        );
    }

    #[test]
    fn quiet_hours_wrap_midnight() {
        let (s, e) = (t(21, 0), t(8, 0));
        assert!(in_quiet_window(t(21, 0), s, e));
        assert!(in_quiet_window(t(23, 59), s, e));
        assert!(in_quiet_window(t(0, 0), s, e));
        assert!(in_quiet_window(t(7, 59), s, e));
        assert!(!in_quiet_window(t(8, 0), s, e));
        assert!(!in_quiet_window(t(20, 59), s, e));
        // A window within one day.
        assert!(in_quiet_window(t(13, 0), t(12, 0), t(14, 0)));
        assert!(!in_quiet_window(t(14, 0), t(12, 0), t(14, 0)));
    }

    #[test]
    fn quiet_hours_end_at_local_eight_across_the_spring_change() {
        // 00:00 EST on the night clocks go forward: the window ends at 08:00 EDT = 12:00 UTC.
        let until = quiet_until(utc("2026-03-08T05:00:00Z"), ny(), t(21, 0), t(8, 0));
        assert_eq!(until, Some(utc("2026-03-08T12:00:00Z")));
        // 22:00 EST the evening before: the same morning.
        let until = quiet_until(utc("2026-03-08T03:00:00Z"), ny(), t(21, 0), t(8, 0));
        assert_eq!(until, Some(utc("2026-03-08T12:00:00Z")));
    }

    #[test]
    fn quiet_hours_end_at_local_eight_across_the_autumn_change() {
        // 01:30 EDT (the first one): the window ends at 08:00 EST = 13:00 UTC.
        let until = quiet_until(utc("2026-11-01T05:30:00Z"), ny(), t(21, 0), t(8, 0));
        assert_eq!(until, Some(utc("2026-11-01T13:00:00Z")));
        // 01:30 EST (the second one), an hour later in UTC: the same end.
        let until = quiet_until(utc("2026-11-01T06:30:00Z"), ny(), t(21, 0), t(8, 0));
        assert_eq!(until, Some(utc("2026-11-01T13:00:00Z")));
    }

    #[test]
    fn outside_quiet_hours_there_is_nothing_to_wait_for() {
        assert_eq!(
            quiet_until(utc("2026-07-01T16:00:00Z"), ny(), t(21, 0), t(8, 0)),
            None
        );
    }

    #[test]
    fn a_quiet_window_ending_in_the_gap_ends_when_the_gap_does() {
        // A window ending at 02:30 on the spring-forward night ends at 03:00 EDT.
        let until = quiet_until(utc("2026-03-08T06:00:00Z"), ny(), t(1, 0), t(2, 30));
        assert_eq!(until, Some(utc("2026-03-08T07:00:00Z")));
    }

    #[test]
    fn offsets_are_minutes_hours_or_days() {
        assert_eq!(parse_offset("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_offset("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse_offset("1d").unwrap(), Duration::from_secs(86_400));
        for bad in [
            "",
            "h",
            "2",
            "2w",
            "-1h",
            "0h",
            "1.5h",
            "400d",
            "144115188075855873d",
            "18446744073709551615m",
            "99999999999999999999h",
        ] {
            assert!(parse_offset(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn templates_render_in_the_recipients_zone() {
        // 20:30 UTC is 3:30 PM in New York on Tuesday, March 3, 2026 (EST).
        let at = utc("2026-03-03T20:30:00Z");
        let text = render(
            "Hi {{name}}, see you at {{time}} on {{date}}.",
            Some("Ana"),
            at,
            ny(),
        );
        assert_eq!(text, "Hi Ana, see you at 3:30 PM on Tuesday, March 3.");
        let tokyo = render("{{time}} {{date}}", None, at, chrono_tz::Asia::Tokyo);
        assert_eq!(tokyo, "5:30 AM Wednesday, March 4");
        assert_eq!(render("Hi {{name}}", None, at, ny()), "Hi there");
    }

    #[test]
    fn a_daily_delivery_starts_at_the_next_local_time() {
        // 07:00 EST: a 07:30 subscription starts today, a 06:30 one tomorrow.
        let now = utc("2026-01-15T12:00:00Z");
        assert_eq!(
            first_daily_date(now, ny(), t(7, 30)),
            "2026-01-15".parse::<NaiveDate>().unwrap()
        );
        assert_eq!(
            first_daily_date(now, ny(), t(6, 30)),
            "2026-01-16".parse::<NaiveDate>().unwrap()
        );
    }

    #[test]
    fn a_local_day_ends_at_local_midnight_even_on_change_days() {
        // 2026-03-08 is 23 hours long in New York; it ends at 00:00 EDT = 04:00 UTC.
        assert_eq!(
            end_of_local_day(ny(), "2026-03-08".parse().unwrap()),
            utc("2026-03-09T04:00:00Z")
        );
        // 2026-11-01 is 25 hours long; it ends at 00:00 EST = 05:00 UTC.
        assert_eq!(
            end_of_local_day(ny(), "2026-11-01".parse().unwrap()),
            utc("2026-11-02T05:00:00Z")
        );
    }
}
