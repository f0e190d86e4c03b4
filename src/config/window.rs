//! The maintenance window: the weekly hours, in UTC, when an unattended upgrade may start.
//!
//! Written as `DAYS HH:MM-HH:MM`, for example `sat,sun 02:00-05:00`, `mon-fri 22:00-01:00`
//! (a window may run past midnight: it belongs to the day it opens on) or `daily 03:00-04:00`.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use jiff::civil::Weekday;
use jiff::tz::TimeZone;

const DAY_NAMES: [(&str, Weekday); 7] = [
    ("mon", Weekday::Monday),
    ("tue", Weekday::Tuesday),
    ("wed", Weekday::Wednesday),
    ("thu", Weekday::Thursday),
    ("fri", Weekday::Friday),
    ("sat", Weekday::Saturday),
    ("sun", Weekday::Sunday),
];

const MINUTES_PER_DAY: u32 = 24 * 60;
const MINUTES_PER_WEEK: u32 = 7 * MINUTES_PER_DAY;

/// A weekly window in UTC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// Days the window opens on, Monday first.
    days: [bool; 7],
    /// Minutes after midnight the window opens.
    start: u32,
    /// Length in minutes, 1 to a whole day.
    length: u32,
    text: String,
}

/// Why a window's text was refused; the message is shown against `upgrade.maintenance_window`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{text}\" {reason}")]
pub struct WindowError {
    pub text: String,
    pub reason: String,
}

impl WindowError {
    pub const HINT: &'static str = "write the days and UTC hours, such as \"sat,sun 02:00-05:00\", \"mon-fri 22:00-01:00\" or \"daily 03:00-04:00\"";
}

impl MaintenanceWindow {
    /// Whether the window is open at `now`.
    pub fn contains(&self, now: Timestamp) -> bool {
        let minute = minute_of_week(now);
        self.openings()
            .any(|open| (minute + MINUTES_PER_WEEK - open) % MINUTES_PER_WEEK < self.length)
    }

    /// When the window next opens after `now` (or `now` itself while it is open).
    pub fn next_opening(&self, now: Timestamp) -> Timestamp {
        if self.contains(now) {
            return now;
        }
        let minute = minute_of_week(now);
        let wait = self
            .openings()
            .map(|open| (open + MINUTES_PER_WEEK - minute) % MINUTES_PER_WEEK)
            .min()
            .unwrap_or(0);
        // Back to the start of the current minute, then forward.
        let second = now.as_second() - now.as_second().rem_euclid(60);
        Timestamp::from_second(second + i64::from(wait) * 60).unwrap_or(now)
    }

    /// Minutes of the week (Monday 00:00 UTC is 0) at which the window opens.
    fn openings(&self) -> impl Iterator<Item = u32> + '_ {
        self.days
            .iter()
            .enumerate()
            .filter(|(_, open)| **open)
            .map(|(day, _)| day as u32 * MINUTES_PER_DAY + self.start)
    }

    /// Length of the window in minutes.
    pub fn minutes(&self) -> u32 {
        self.length
    }
}

fn minute_of_week(now: Timestamp) -> u32 {
    let time = now.to_zoned(TimeZone::UTC);
    let day = time.weekday().to_monday_zero_offset() as u32;
    day * MINUTES_PER_DAY + time.hour() as u32 * 60 + time.minute() as u32
}

impl FromStr for MaintenanceWindow {
    type Err = WindowError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let error = |reason: &str| WindowError {
            text: text.to_owned(),
            reason: reason.to_owned(),
        };
        let normalized = text.trim().to_ascii_lowercase();
        let (days_text, hours_text) = normalized
            .split_once(char::is_whitespace)
            .ok_or_else(|| error("names no hours: write the days, a space, then HH:MM-HH:MM"))?;
        let days = parse_days(days_text).map_err(|reason| error(&reason))?;
        let (start_text, end_text) = hours_text
            .trim()
            .split_once('-')
            .ok_or_else(|| error("has no end time: write the hours as HH:MM-HH:MM"))?;
        let start = parse_time(start_text).map_err(|reason| error(&reason))?;
        let end = parse_time(end_text).map_err(|reason| error(&reason))?;
        let length = if end > start {
            end - start
        } else {
            end + MINUTES_PER_DAY - start
        };
        if length < 30 {
            return Err(error(
                "is shorter than 30 minutes, too short for an upgrade to start and be watched",
            ));
        }
        Ok(MaintenanceWindow {
            days,
            start,
            length,
            text: format!("{days_text} {start_text}-{end_text}"),
        })
    }
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    if text == "daily" {
        return Ok([true; 7]);
    }
    let index = |name: &str| {
        DAY_NAMES
            .iter()
            .position(|(day, _)| *day == name)
            .ok_or_else(|| {
                format!(
                    "has an unknown day \"{name}\" (use mon, tue, wed, thu, fri, sat, sun or daily)"
                )
            })
    };
    for part in text.split(',') {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (index(first)?, index(last)?);
                let mut day = first;
                loop {
                    days[day] = true;
                    if day == last {
                        break;
                    }
                    day = (day + 1) % 7;
                }
            }
            None => days[index(part)?] = true,
        }
    }
    Ok(days)
}

fn parse_time(text: &str) -> Result<u32, String> {
    let invalid = || format!("has \"{text}\", not a time of day as HH:MM");
    let (hours, minutes) = text.split_once(':').ok_or_else(invalid)?;
    let hours: u32 = hours.parse().map_err(|_| invalid())?;
    let minutes: u32 = minutes.parse().map_err(|_| invalid())?;
    if minutes >= 60 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(invalid());
    }
    Ok(hours * 60 + minutes)
}

impl fmt::Display for MaintenanceWindow {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(formatter, "{} UTC", self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn weekend_window_opens_on_saturday_and_sunday_only() {
        let window: MaintenanceWindow = "sat,sun 02:00-05:00".parse().unwrap();
        // 2026-11-21 is a Saturday.
        assert!(window.contains(at("2026-11-21T02:00:00Z")));
        assert!(window.contains(at("2026-11-22T04:59:00Z")));
        assert!(!window.contains(at("2026-11-22T05:00:00Z")));
        assert!(!window.contains(at("2026-11-23T03:00:00Z")));
        assert_eq!(
            window.next_opening(at("2026-11-23T03:17:42Z")),
            at("2026-11-28T02:00:00Z")
        );
    }

    #[test]
    fn window_past_midnight_belongs_to_the_day_it_opens() {
        let window: MaintenanceWindow = "fri 22:00-01:00".parse().unwrap();
        assert_eq!(window.minutes(), 180);
        // 2026-11-20 is a Friday; 00:30 on Saturday is still Friday's window.
        assert!(window.contains(at("2026-11-21T00:30:00Z")));
        assert!(!window.contains(at("2026-11-22T00:30:00Z")));
        // Sunday night to Monday morning wraps around the week.
        let sunday: MaintenanceWindow = "sun 23:00-02:00".parse().unwrap();
        assert!(sunday.contains(at("2026-11-23T01:00:00Z")));
    }

    #[test]
    fn day_ranges_and_daily() {
        let weekdays: MaintenanceWindow = "mon-fri 03:00-04:00".parse().unwrap();
        assert!(weekdays.contains(at("2026-11-25T03:30:00Z")));
        assert!(!weekdays.contains(at("2026-11-21T03:30:00Z")));
        let daily: MaintenanceWindow = "daily 03:00-04:00".parse().unwrap();
        assert!(daily.contains(at("2026-11-21T03:30:00Z")));
        assert_eq!(daily.to_string(), "daily 03:00-04:00 UTC");
    }

    #[test]
    fn mistakes_are_named() {
        for (text, reason) in [
            ("sat", "names no hours"),
            ("caturday 02:00-03:00", "unknown day \"caturday\""),
            ("sat 2am-3am", "not a time of day"),
            ("sat 02:00", "no end time"),
            ("sat 02:00-02:10", "shorter than 30 minutes"),
            ("sat 25:00-26:00", "not a time of day"),
        ] {
            let error = text.parse::<MaintenanceWindow>().unwrap_err();
            assert!(
                error.to_string().contains(reason),
                "{text}: {error} lacks {reason}"
            );
        }
    }
}
