//! Event-time parsing for the date/time column. Without a format the common shapes are
//! recognised: ISO dates and date-times with or without an offset, `MM/DD/YYYY`,
//! `DD.MM.YYYY`, `YYYYMMDD`, month names (`Jan 4 2021`, `4 Jan 2021`, `January 4, 2021`)
//! and integer Unix epochs, whose unit (s, ms, µs, ns) follows from their magnitude.
//! Date-times without an offset are in the parser's zone (UTC unless given); plain dates
//! are calendar days and stay at midnight UTC whatever the zone.

use std::str::FromStr;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeZone as _};
use chrono_tz::Tz;

use crate::error::{Error, Result};

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

/// The wall clock, milliseconds since the epoch (Kafka's and the catalogs' unit).
pub fn now_millis() -> i64 {
    now_micros() / 1000
}

/// Dates with a month name, as price files from many sources write them.
const NAMED_MONTH_FORMATS: [&str; 5] =
    ["%B %d %Y", "%d %B %Y", "%B %d, %Y", "%d-%B-%Y", "%d %B, %Y"];

/// Integer epochs below this are seconds (up to the year 5138), then milliseconds,
/// microseconds, and nanoseconds beyond.
const EPOCH_SECONDS_BELOW: i64 = 100_000_000_000;

/// Parses one event time to microseconds since the Unix epoch (UTC), or `None` if the text
/// is none of the shapes recognised without a format.
pub fn parse_micros(text: &str) -> Option<i64> {
    parse_event_time(text).map(|(micros, _)| micros)
}

/// Like [`parse_micros`], also telling whether the text was a plain date (no time of day).
pub fn parse_event_time(text: &str) -> Option<(i64, bool)> {
    TimeFormat::default().parse(text).ok()
}

/// How a time field is read: a strftime format, or the common shapes recognised; and the
/// zone of date-times written without an offset. `"%d/%m/%Y"`, `"%Y%m%d %H%M%S"`…
/// (`FromStr`: `"<format>"`, or `"<format> @ <zone>"`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TimeFormat {
    format: Option<String>,
    zone: Option<Tz>,
}

impl TimeFormat {
    /// `format` as strftime (`None`: recognise the common shapes); `zone` an IANA name
    /// such as `"America/New_York"` (`None`: UTC). Names `argument` in errors.
    pub fn new(format: Option<&str>, zone: Option<&str>) -> Result<Self> {
        let format = format.map(str::trim).filter(|f| !f.is_empty());
        if let Some(f) = format {
            if StrftimeItems::new(f).any(|item| matches!(item, Item::Error)) {
                return Err(Error::config(format!(
                    "time_format {f:?} is not a strftime format (e.g. \"%d.%m.%Y %H:%M\")"
                )));
            }
        }
        let zone = zone
            .map(str::trim)
            .filter(|z| !z.is_empty())
            .map(|z| {
                Tz::from_str(z).map_err(|_| {
                    Error::config(format!(
                        "time_zone {z:?} is not an IANA zone name (e.g. \"America/New_York\")"
                    ))
                })
            })
            .transpose()?;
        Ok(TimeFormat {
            format: format.map(str::to_string),
            zone,
        })
    }

    /// The strftime format (`None`: the common shapes are recognised).
    pub fn format(&self) -> Option<&str> {
        self.format.as_deref()
    }

    /// The zone of date-times without an offset (`None`: UTC).
    pub fn zone(&self) -> Option<Tz> {
        self.zone
    }

    /// Microseconds since the Unix epoch (UTC), and whether the text was a plain date; or
    /// why the text is not a time.
    pub fn parse(&self, text: &str) -> std::result::Result<(i64, bool), String> {
        let text = text.trim();
        match &self.format {
            Some(format) => self
                .with_format(text, format)
                .ok_or_else(|| format!("cannot parse {text:?} with time_format {format:?}")),
            None => self.recognise(text),
        }
    }

    fn with_format(&self, text: &str, format: &str) -> Option<(i64, bool)> {
        if let Ok(t) = DateTime::parse_from_str(text, format) {
            return Some((t.timestamp_micros(), false));
        }
        if let Ok(t) = NaiveDateTime::parse_from_str(text, format) {
            return self.local(t).map(|m| (m, false));
        }
        NaiveDate::parse_from_str(text, format).ok().map(day)
    }

    fn recognise(&self, text: &str) -> std::result::Result<(i64, bool), String> {
        if let Some(date) = parse_date(text) {
            return Ok(day(date));
        }
        if let Some(naive) = parse_naive_fast(text) {
            if self.zone.is_none() {
                return Ok((naive, false));
            }
            let t = DateTime::from_timestamp_micros(naive).map(|t| t.naive_utc());
            return t
                .and_then(|t| self.local(t))
                .map(|m| (m, false))
                .ok_or_else(|| skipped(text));
        }
        if let Ok(t) = DateTime::parse_from_rfc3339(text) {
            return Ok((t.timestamp_micros(), false));
        }
        if let Some(t) = NAIVE_FORMATS
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
        {
            return self
                .local(t)
                .map(|m| (m, false))
                .ok_or_else(|| skipped(text));
        }
        if let Some(date) = NAMED_MONTH_FORMATS
            .iter()
            .find_map(|f| NaiveDate::parse_from_str(text, f).ok())
        {
            return Ok(day(date));
        }
        // Eight digits that are no YYYYMMDD date are more likely a typo than a 1970 epoch.
        if let Some(micros) = epoch(text).filter(|_| text.len() != 8) {
            return Ok((micros, false));
        }
        Err(why_not(text))
    }

    /// A naive date-time in this format's zone, as UTC microseconds (`None` in a gap).
    fn local(&self, t: NaiveDateTime) -> Option<i64> {
        match self.zone {
            None => Some(t.and_utc().timestamp_micros()),
            // An hour repeated when clocks go back is taken at its first occurrence.
            Some(zone) => zone
                .from_local_datetime(&t)
                .earliest()
                .map(|z| z.timestamp_micros()),
        }
    }
}

impl FromStr for TimeFormat {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text.rsplit_once(" @ ") {
            Some((format, zone)) => TimeFormat::new(Some(format), Some(zone)),
            None => TimeFormat::new(Some(text), None),
        }
    }
}

fn day(date: NaiveDate) -> (i64, bool) {
    let midnight = date.and_hms_opt(0, 0, 0).expect("midnight exists");
    (midnight.and_utc().timestamp_micros(), true)
}

fn skipped(text: &str) -> String {
    format!("cannot parse {text:?}: it falls in a daylight-saving gap of time_zone")
}

/// An integer Unix epoch in seconds, milliseconds, microseconds or nanoseconds, told apart
/// by magnitude; `YYYYMMDD` dates are read as dates before this is tried.
fn epoch(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || digits.len() > 19 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok().map(epoch_micros)
}

/// An integer Unix epoch in microseconds, its unit (s, ms, µs, ns) told by its magnitude.
pub fn epoch_micros(v: i64) -> i64 {
    let magnitude = v.unsigned_abs();
    let below = EPOCH_SECONDS_BELOW as u64;
    if magnitude < below {
        v * 1_000_000
    } else if magnitude < below * 1000 {
        v * 1000
    } else if magnitude < below * 1_000_000 {
        v
    } else {
        v / 1000
    }
}

/// Why a text recognised as none of the shapes is not a time, with the format to give.
fn why_not(text: &str) -> String {
    let parts: Vec<&str> = text.split('/').collect();
    if let [a, b, _] = parts[..] {
        if a.parse::<u32>().is_ok_and(|a| a > 12) && b.parse::<u32>().is_ok_and(|b| b <= 12) {
            return format!(
                "cannot parse {text:?} as MM/DD/YYYY; if the day comes first, give \
                 time_format=\"%d/%m/%Y\""
            );
        }
    }
    if text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) {
        return format!(
            "cannot parse {text:?}: it is neither a YYYYMMDD date nor clearly an epoch; give \
             time_format \
             (e.g. \"%Y%m%d\")"
        );
    }
    format!(
        "cannot parse {text:?} as a date or time; give time_format (strftime, \
         e.g. \"%d/%m/%Y %H:%M\")"
    )
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
    if b.len() == 8 && b.iter().all(u8::is_ascii_digit) {
        return NaiveDate::parse_from_str(text, "%Y%m%d").ok();
    }
    // chrono's format parser is slow to fail, and date-times come this way first.
    if text.contains('/') {
        NaiveDate::parse_from_str(text, "%m/%d/%Y").ok()
    } else if text.contains('.') {
        NaiveDate::parse_from_str(text, "%d.%m.%Y").ok()
    } else {
        None
    }
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
    fn recognises_the_common_shapes_of_other_sources() {
        let jan4 = parse_micros("2021-01-04").unwrap();
        for text in [
            "01/04/2021",
            "1/4/2021",
            "04.01.2021",
            "20210104",
            "Jan 4 2021",
            "4 Jan 2021",
            "January 4, 2021",
            "04-Jan-2021",
            "1609718400",
            "1609718400000",
            "1609718400000000",
            "1609718400000000000",
        ] {
            assert_eq!(parse_micros(text), Some(jan4), "{text:?}");
        }
        assert_eq!(
            parse_micros("2021-01-04 09:30:00Z"),
            Some(jan4 + 34_200_000_000)
        );
        assert_eq!(parse_micros("-86400"), Some(-86_400_000_000));
    }

    #[test]
    fn a_format_and_a_zone_read_what_cannot_be_guessed() {
        let f = TimeFormat::new(Some("%d/%m/%Y %H:%M"), Some("Europe/Berlin")).unwrap();
        // 09:30 in Berlin in winter is 08:30 UTC.
        let (micros, date) = f.parse("13/01/2021 09:30").unwrap();
        assert_eq!(micros, parse_micros("2021-01-13 08:30:00").unwrap());
        assert!(!date);
        // Plain dates stay calendar days.
        let f = TimeFormat::new(Some("%d/%m/%Y"), Some("Asia/Tokyo")).unwrap();
        assert_eq!(
            f.parse("13/01/2021"),
            Ok((parse_micros("2021-01-13").unwrap(), true))
        );
        let zoned: TimeFormat = "%Y%m%d %H%M @ America/New_York".parse().unwrap();
        assert_eq!(
            zoned.parse("20210704 0930").map(|(m, _)| m),
            Ok(parse_micros("2021-07-04 13:30:00").unwrap())
        );
        assert!(f.parse("2021-01-13").unwrap_err().contains("time_format"));
    }

    #[test]
    fn day_first_and_bad_settings_are_explained() {
        let why = TimeFormat::default().parse("13/01/2021").unwrap_err();
        assert!(why.contains("%d/%m/%Y"), "{why}");
        assert!(TimeFormat::default()
            .parse("20211301")
            .unwrap_err()
            .contains("YYYYMMDD"));
        assert!(matches!(
            TimeFormat::new(Some("%Q"), None),
            Err(e) if e.is(crate::error::Kind::Config)
        ));
        assert!(matches!(
            TimeFormat::new(None, Some("Mars/Olympus")),
            Err(e) if e.is(crate::error::Kind::Config)
        ));
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
