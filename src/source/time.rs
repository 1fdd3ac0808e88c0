//! Event-time parsing for the date/time column: dates, naive date-times (taken as UTC)
//! and RFC 3339 timestamps with an offset.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

const NAIVE_FORMATS: [&str; 4] = [
    "%Y-%m-%d %H:%M:%S%.f",
    "%Y-%m-%dT%H:%M:%S%.f",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%dT%H:%M",
];

/// The wall clock, microseconds since the epoch.
pub fn now_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

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
    if let Some(micros) = parse_naive_fast(text) {
        return Some((micros, false));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some((t.timestamp_micros(), false));
    }
    NAIVE_FORMATS
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        .map(|t| (t.and_utc().timestamp_micros(), false))
}

/// `YYYY-MM-DD HH:MM:SS[.f…]` (or with `T`), the shape of intraday ticks, parsed by hand:
/// chrono's format-driven parser costs more than the rest of decoding a tick.
fn parse_naive_fast(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    if b.len() < 19 || !matches!(b[10], b' ' | b'T') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let date = parse_date(text.get(..10)?)?;
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        let digits = b.get(r)?;
        digits.iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let mut micros = 0u32;
    match b.get(19) {
        None => {}
        Some(b'.') => {
            let frac = &b[20..];
            if frac.is_empty() || frac.len() > 9 || !frac.iter().all(u8::is_ascii_digit) {
                return None;
            }
            for (i, d) in frac.iter().take(6).enumerate() {
                micros += u32::from(d - b'0') * 10u32.pow(5 - i as u32);
            }
        }
        Some(_) => return None,
    }
    let time =
        chrono::NaiveTime::from_hms_micro_opt(num(11..13)?, num(14..16)?, num(17..19)?, micros)?;
    Some(date.and_time(time).and_utc().timestamp_micros())
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
        assert_eq!(parse_micros("1970-01-01T00:00:01.000002"), Some(1_000_002));
        assert_eq!(parse_micros("1970-01-01 00:00:01"), Some(1_000_000));
        assert_eq!(parse_micros("1970-01-01T00:01"), Some(60_000_000));
        assert_eq!(parse_micros("1970-01-01T01:00:00+01:00"), Some(0));
        assert_eq!(parse_micros("1969-12-31"), Some(-86_400_000_000));
    }

    #[test]
    fn rejects_non_dates() {
        for bad in [
            "",
            "yesterday",
            "2021-13-01",
            "2021-02-30",
            "2021-1-1x",
            "2021-01-01 25:00:00",
            "2021-01-01 10:00:00.",
            "2021-01-01 10:00:0x",
        ] {
            assert_eq!(parse_micros(bad), None, "{bad:?}");
        }
    }
}
