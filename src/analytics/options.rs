//! An analytics job's options as written by a user (names of indicators and rules, window
//! lengths, output topics, a zone name), turned into its configuration: each decision the
//! bindings used to make is made here.

use chrono_tz::Tz;

use super::engine::Spec;
use super::expr::Expr;
use super::join::AsOf;
use super::output::Kind;
use super::spec::{Indicator, Rule, WindowSpec};
use super::AnalyticsConfig;
use crate::error::{Error, Result};
use crate::record::time::TimeFormat;

/// The outputs a callback gets unless told otherwise: closed windows and alerts.
pub const CALLBACK_KINDS: [Kind; 2] = [Kind::Window, Kind::Alert];

/// Where an analytics job writes: one topic per kind of output (`None`: not produced),
/// and the topic its state is checkpointed to (`<group_id>-state` when `None`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outputs {
    pub windows: Option<String>,
    pub indicators: Option<String>,
    pub alerts: Option<String>,
    pub late: Option<String>,
    pub state: Option<String>,
}

/// A window as written (µs of event time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// Tumbling windows of this length, or hopping ones with a slide.
    Length(i64),
    /// Per-symbol sessions ending after this gap without a tick.
    Session(i64),
}

/// What to compute, from its written form: the window and slide (µs of event time),
/// indicator names, alert rules, the allowed lateness (µs) and the fields a join adds.
pub fn spec(
    window: Option<Window>,
    slide: Option<i64>,
    indicators: &[String],
    alerts: &[String],
    lateness: i64,
    joined: &[String],
) -> Result<Spec> {
    let window = match (window, slide) {
        (Some(Window::Length(size)), slide) => Some(WindowSpec::new(size, slide)?),
        (Some(Window::Session(gap)), None) => Some(WindowSpec::session(gap)?),
        (Some(Window::Session(_)), Some(_)) => {
            return Err(Error::config(
                "a session window has no slide: sessions end after their gap",
            ))
        }
        (None, Some(_)) => return Err(Error::config("slide needs a window")),
        (None, None) => None,
    };
    Spec::new(
        window,
        indicators
            .iter()
            .map(|n| n.parse::<Indicator>())
            .collect::<Result<_>>()?,
        alerts
            .iter()
            .map(|r| r.parse::<Rule>())
            .collect::<Result<_>>()?,
        lateness,
        joined.to_vec(),
    )
}

impl AnalyticsConfig {
    /// Writes `outputs`' topics; the state topic stays `<group_id>-state` unless named.
    pub fn with_outputs(mut self, outputs: Outputs) -> Self {
        self.topics = [
            outputs.windows,
            outputs.indicators,
            outputs.alerts,
            outputs.late,
        ];
        if let Some(state) = outputs.state {
            self.state_topic = state;
        }
        self
    }

    /// Trading days (and so session VWAP) begin in `zone`; without one, in the zone the
    /// tick times are written in (UTC if none).
    pub fn with_session_zone(mut self, zone: Option<&str>) -> Result<Self> {
        self.fields.session_zone = match zone {
            Some(name) => Some(zone_named(name)?),
            None => self.fields.time_format.zone(),
        };
        Ok(self)
    }
}

impl AnalyticsConfig {
    /// Joins each tick with `join`'s table and reads the price as `price` (a field, or
    /// arithmetic over the tick's and the joined fields) when given.
    pub fn with_join(mut self, join: Option<AsOf>, price: Option<&str>) -> Result<Self> {
        if let Some(price) = price {
            self.fields.price = Expr::parse(price)?;
        }
        if let Some(join) = &join {
            join.validate()?;
        }
        self.join = join;
        Ok(self)
    }
}

fn zone_named(name: &str) -> Result<Tz> {
    TimeFormat::new(None, Some(name))
        .ok()
        .and_then(|f| f.zone())
        .ok_or_else(|| {
            Error::config(format!(
                "session_zone {name:?} is not an IANA zone name (e.g. \"America/New_York\")"
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::TickFields;

    const MINUTE: i64 = 60_000_000;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_slide_needs_a_window_and_names_are_parsed() {
        let e = spec(None, Some(MINUTE), &[], &[], 0, &[]).unwrap_err();
        assert!(e.to_string().contains("slide needs a window"));
        let s = spec(
            Some(Window::Length(5 * MINUTE)),
            Some(MINUTE),
            &names(&["sma_20"]),
            &names(&["rsi_14 crosses 70"]),
            0,
            &[],
        )
        .unwrap();
        assert!(s.window.is_some());
        assert_eq!(s.indicators.len(), 2, "rsi_14 added for the rule");
        let rate = names(&["rate"]);
        let joined = spec(None, None, &[], &names(&["rate crosses 7"]), 0, &rate).unwrap();
        assert!(
            joined.indicators.is_empty(),
            "a joined field is no indicator"
        );
        assert_eq!(joined.indicator_names(), rate);
        for clash in ["price", "sma_20"] {
            let e = spec(None, None, &names(&["sma_20"]), &[], 0, &names(&[clash])).unwrap_err();
            assert!(e.to_string().contains("name of an output column"), "{e}");
        }
        assert!(spec(None, None, &names(&["nonsense_3"]), &[], 0, &[]).is_err());
        let e = spec(None, None, &[], &names(&["rate crosses 7"]), 0, &[]).unwrap_err();
        assert!(e.to_string().contains("nor a joined field"), "{e}");
        let session = spec(Some(Window::Session(MINUTE)), None, &[], &[], 0, &[]).unwrap();
        assert!(session
            .window
            .is_some_and(|w| w.session && w.size == MINUTE));
        let e = spec(
            Some(Window::Session(MINUTE)),
            Some(MINUTE),
            &[],
            &[],
            0,
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("no slide"));
    }

    #[test]
    fn outputs_name_topics_and_the_state_topic_defaults_to_the_groups() {
        let base =
            || AnalyticsConfig::new("ticks", "g", spec(None, None, &[], &[], 0, &[]).unwrap());
        let config = base().with_outputs(Outputs {
            windows: Some("bars".into()),
            ..Outputs::default()
        });
        assert_eq!(config.topics[Kind::Window.index()].as_deref(), Some("bars"));
        assert_eq!(config.topics[Kind::Alert.index()], None);
        assert_eq!(config.state_topic, "g-state");
        let named = base().with_outputs(Outputs {
            state: Some("s".into()),
            ..Outputs::default()
        });
        assert_eq!(named.state_topic, "s");
    }

    #[test]
    fn sessions_begin_in_the_named_zone_or_the_times_own() {
        let mut config =
            AnalyticsConfig::new("t", "g", spec(None, None, &[], &[], 0, &[]).unwrap());
        config.fields = TickFields {
            time_format: TimeFormat::new(None, Some("Europe/Paris")).unwrap(),
            ..TickFields::default()
        };
        let own = config.clone().with_session_zone(None).unwrap();
        assert_eq!(own.fields.session_zone, Some(chrono_tz::Europe::Paris));
        let named = config
            .clone()
            .with_session_zone(Some("America/New_York"))
            .unwrap();
        assert_eq!(
            named.fields.session_zone,
            Some(chrono_tz::America::New_York)
        );
        let e = config.with_session_zone(Some("Mars/Olympus")).unwrap_err();
        assert!(e.to_string().contains("not an IANA zone"));
    }
}
