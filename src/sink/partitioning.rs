//! Choosing a new table's time folders from its data: a folder should collect a healthy
//! amount of data over its life, not a handful of rows. Daily bars of a few symbols get
//! no time folders (or years, for thousands of symbols); one tick a second gets a folder a
//! day; denser streams a folder an hour.

use super::config::RollPolicy;
use crate::lake::PartitionKey;

/// A folder is worth having when it is expected to collect at least this many records
/// over its life (about 10 MB of tutorial-shaped JSON, a few MB of Parquet): the day of a
/// symbol ticking once a second qualifies, its hour does not.
pub const FOLDER_RECORDS: f64 = 64_000.0;

/// Seconds of event time per folder, finest first.
const SPANS: [(PartitionKey, f64); 4] = [
    (PartitionKey::Hour, 3_600.0),
    (PartitionKey::Date, 86_400.0),
    (PartitionKey::Month, 2_629_746.0),
    (PartitionKey::Year, 31_556_952.0),
];

/// What the first records said about the stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct Density {
    pub records: u64,
    pub min_micros: i64,
    pub max_micros: i64,
    pub symbols: usize,
    /// The topic's partitions, and how many of them the records came from: a member sees
    /// only its share of the stream.
    pub topic_partitions: usize,
    pub sampled_partitions: usize,
    /// Some record's event time had a time of day (not a plain date).
    pub time_of_day: bool,
}

/// The time folder for a stream of this density (`None`: no time folders), and why.
pub fn choose(d: &Density, roll: &RollPolicy, per_symbol: bool) -> (Option<PartitionKey>, String) {
    // A folder's objects can never be larger than a roll, so there is no point in
    // folders that wait for more than a roll's worth of records.
    let target = FOLDER_RECORDS.min(roll.records as f64);
    let span = (d.max_micros - d.min_micros) as f64 / 1e6;
    let share = d.topic_partitions.max(1) as f64 / d.sampled_partitions.max(1) as f64;
    let divisor = if per_symbol {
        d.symbols.max(1) as f64
    } else {
        1.0
    };
    if d.records < 2 || span <= 0.0 {
        return (
            Some(PartitionKey::Date),
            format!(
                "auto: date (the first {} records span no event time to measure)",
                d.records
            ),
        );
    }
    let rate = d.records as f64 / span * share / divisor;
    let per = if per_symbol { " per symbol" } else { "" };
    for (key, seconds) in SPANS {
        let expected = rate * seconds;
        if expected >= target {
            return (
                Some(key),
                format!(
                    "auto: {} ({:.0} records{per} expected per folder from the first {} records)",
                    key.name(),
                    expected,
                    d.records
                ),
            );
        }
    }
    let year = rate * SPANS[3].1;
    (
        None,
        format!(
            "auto: no time folders (only {year:.0} records{per} a year expected from the first {} \
             records)",
            d.records
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000;

    fn density(records: u64, days: f64, symbols: usize) -> Density {
        Density {
            records,
            min_micros: 0,
            max_micros: (days * DAY as f64) as i64,
            symbols,
            topic_partitions: 4,
            sampled_partitions: 4,
            time_of_day: true,
        }
    }

    #[test]
    fn daily_bars_of_a_few_symbols_get_no_time_folders() {
        // 14 indices, business days over 56 years.
        let d = density(14 * 252 * 56, 56.0 * 365.25, 14);
        let (key, why) = choose(&d, &RollPolicy::default(), false);
        assert_eq!(key, None, "{why}");
        // A thousand symbols fill a year.
        let d = density(1000 * 252 * 2, 2.0 * 365.25, 1000);
        assert_eq!(
            choose(&d, &RollPolicy::default(), false).0,
            Some(PartitionKey::Year)
        );
    }

    #[test]
    fn ticks_every_second_get_a_folder_a_day_and_dense_streams_an_hour() {
        // 14 symbols, one tick a second each, for ten minutes.
        let d = density(14 * 600, 600.0 / 86_400.0, 14);
        let (key, why) = choose(&d, &RollPolicy::default(), false);
        assert_eq!(key, Some(PartitionKey::Date), "{why}");
        // One symbol alone still fills a day.
        let d = density(600, 600.0 / 86_400.0, 1);
        assert_eq!(
            choose(&d, &RollPolicy::default(), false).0,
            Some(PartitionKey::Date)
        );
        // 500 symbols a second fill an hour.
        let d = density(500 * 60, 60.0 / 86_400.0, 500);
        assert_eq!(
            choose(&d, &RollPolicy::default(), false).0,
            Some(PartitionKey::Hour)
        );
        // Per symbol folders need each symbol's share to fill a folder.
        assert_eq!(
            choose(&d, &RollPolicy::default(), true).0,
            Some(PartitionKey::Date)
        );
    }

    #[test]
    fn a_member_scales_its_share_and_no_span_means_date() {
        let mut d = density(14 * 600, 600.0 / 86_400.0, 14);
        d.sampled_partitions = 1;
        // Four times the rate: an hour holds 201,600 records.
        assert_eq!(
            choose(&d, &RollPolicy::default(), false).0,
            Some(PartitionKey::Hour)
        );
        let d = density(1, 0.0, 1);
        assert_eq!(
            choose(&d, &RollPolicy::default(), false).0,
            Some(PartitionKey::Date)
        );
    }
}
