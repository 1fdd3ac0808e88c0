//! Event-time parsing for the date/time column: dates, naive date-times (taken as UTC)
//! and RFC 3339 timestamps with an offset.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

const NAIVE_FORMATS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// Parses one event time to microseconds since the Unix epoch (UTC), or `None` if the text
/// is not a date (`2021-06-02`, `06/02/2021`), a date-time, or an RFC 3339 timestamp.
pub fn parse_micros(text: &str) -> Option<i64> {
    parse_event_time(text).map(|(micros, _)| micros)
}

/// Like [`parse_micros`], also telling whether the text was a plain date (no time of day).
pub fn parse_event_time(text: &str) -> Option<(i64, bool)> {
    let text = text.trim();
    if let Some(date) = parse_date(text) {
        return date
            .and_hms_opt(0, 0, 0)
            .map(|t| (t.and_utc().timestamp_micros(), true));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some((t.timestamp_micros(), false));
    }
    NAIVE_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| (t.and_utc().timestamp_micros(), false))
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    let b = text.as_bytes();
    // The common case (ISO dates, as in the tutorial's file) is parsed by hand: it is the
    // inner loop of loading files with hundreds of millions of rows.
    if b.len() == 10 && b[4] == b'-' && b[7] == b'-' {
        let num = |r: std::ops::Range<usize>| text.get(r)?.parse::<u32>().ok();
        return NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?);
    }
    NaiveDate::parse_from_str(text, "%m/%d/%Y").ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_supported_shapes() {
        assert_eq!(parse_micros("1970-01-02"), Some(86_400_000_000));
        assert_eq!(parse_micros("01/02/1970"), Some(86_400_000_000));
        assert_eq!(parse_micros("1970-01-01 00:00:01.5"), Some(1_500_000));
        assert_eq!(parse_micros("1970-01-01T00:01"), Some(60_000_000));
        assert_eq!(parse_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_micros("1969-12-31"), Some(-86_400_000_000));
    }

    #[test]
    fn rejects_non_dates() {
        for bad in ["", "yesterday", "2021-13-01", "2021-02-30", "2021-1-1x"] {
            assert_eq!(parse_micros(bad), None, "{bad:?}");
        }
    }
}
