//! The event-time core, one Kafka partition at a time, with no Kafka in it.
//!
//! Ticks wait in a reorder buffer until the partition's watermark (the latest event time
//! seen, minus the allowed lateness) reaches them, and are then released in event-time
//! order. Windows, indicators and alerts therefore see every symbol's ticks sorted, and a
//! window closes once the watermark reaches its end. A tick behind the watermark when it
//! arrives is late: it goes to the side output and changes nothing. Everything here is
//! serialisable, so a partition's state can be checkpointed and restored as one value.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::indicator::IndicatorState;
use super::output::{Alert, Bar, Indicators, Late, Output};
use super::spec::{Indicator, Operand, Rule, RuleKind, WindowSpec};
use super::tick::Tick;

/// What to compute, checked and resolved once.
#[derive(Debug, Clone)]
pub struct Spec {
    pub window: Option<WindowSpec>,
    pub indicators: Vec<Indicator>,
    pub rules: Vec<Rule>,
    /// Allowed lateness, microseconds.
    pub lateness: i64,
    /// The fields an as-of join adds to each tick: in indicator outputs after the
    /// indicators, and usable in rules like them.
    pub joined: Vec<String>,
}

impl Spec {
    /// Adds the indicators that rules refer to but were not asked for.
    pub fn new(
        window: Option<WindowSpec>,
        mut indicators: Vec<Indicator>,
        rules: Vec<Rule>,
        lateness: i64,
        joined: Vec<String>,
    ) -> crate::error::Result<Self> {
        for name in &joined {
            if ["symbol", "time", "price"].contains(&name.as_str())
                || indicators.iter().any(|i| &i.name == name)
            {
                return Err(crate::error::Error::config(format!(
                    "the joined field {name:?} has the name of an output column: rename it in \
                     the joined topic"
                )));
            }
        }
        for rule in &rules {
            if matches!(rule.kind, RuleKind::Move(_)) && window.is_none() {
                return Err(crate::error::Error::config(format!(
                    "alert rule {:?} needs a window: set window=\"1m\" (or another length)",
                    rule.text
                )));
            }
            for name in rule.indicators() {
                if !indicators.iter().any(|i| i.name == name) && !joined.iter().any(|j| j == name) {
                    let indicator = str::parse::<Indicator>(name).map_err(|_| {
                        crate::error::Error::config(format!(
                            "alert rule {:?}: {name:?} is neither price, a number, an \
                             indicator nor a joined field",
                            rule.text
                        ))
                    })?;
                    indicators.push(indicator);
                }
            }
        }
        if lateness < 0 {
            return Err(crate::error::Error::config(
                "allowed lateness may not be negative",
            ));
        }
        Ok(Spec {
            window,
            indicators,
            rules,
            lateness,
            joined,
        })
    }

    /// The names of the indicator outputs' values: the indicators, then the joined fields.
    pub fn indicator_names(&self) -> Vec<String> {
        self.indicators
            .iter()
            .map(|i| &i.name)
            .chain(&self.joined)
            .cloned()
            .collect()
    }

    fn operand(&self, operand: &Operand, price: f64, values: &[Option<f64>]) -> Option<f64> {
        match operand {
            Operand::Price => Some(price),
            Operand::Level(v) => Some(*v),
            Operand::Indicator(name) => self
                .indicators
                .iter()
                .map(|i| &i.name)
                .chain(&self.joined)
                .position(|n| n == name)
                .and_then(|i| values.get(i).copied().flatten()),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct OpenBar {
    start: i64,
    open: f64,
    high: f64,
    low: f64,
    close: f64,
    volume: f64,
    /// Sum of price × volume.
    turnover: f64,
    count: u64,
    /// The time of its latest tick (sessions end a gap after it).
    #[serde(default)]
    last: i64,
}

impl OpenBar {
    fn new(start: i64, price: f64) -> Self {
        OpenBar {
            start,
            last: start,
            open: price,
            high: price,
            low: price,
            close: price,
            volume: 0.0,
            turnover: 0.0,
            count: 0,
        }
    }

    fn add(&mut self, time: i64, price: f64, volume: f64) {
        self.last = time;
        if self.count == 0 {
            self.open = price;
        }
        self.high = self.high.max(price);
        self.low = self.low.min(price);
        self.close = price;
        self.volume += volume;
        self.turnover += price * volume;
        self.count += 1;
    }

    /// Where the window ends (exclusive): a session's, once its gap passed after its last
    /// tick.
    fn end(&self, w: WindowSpec) -> i64 {
        match w.session {
            true => self.last + w.size,
            false => self.start + w.size,
        }
    }

    fn close(self, symbol: &str, w: WindowSpec) -> Bar {
        Bar {
            symbol: symbol.to_string(),
            start: self.start,
            end: self.end(w),
            open: self.open,
            high: self.high,
            low: self.low,
            close: self.close,
            volume: self.volume,
            vwap: (self.volume != 0.0).then(|| self.turnover / self.volume),
            count: self.count,
            change_pct: (self.close / self.open - 1.0) * 100.0,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SymbolState {
    /// Open windows, oldest first.
    bars: VecDeque<OpenBar>,
    indicators: Vec<IndicatorState>,
    /// Per rule: whether its left side was at or above its right side at the last tick.
    sides: Vec<Option<bool>>,
}

/// What a snapshot was computed for: the parts of a [`Spec`] its state depends on, so that
/// a job restarted with other settings can tell what it restores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Settings {
    /// Window size and slide, µs.
    window: Option<(i64, i64)>,
    #[serde(default)]
    session: bool,
    indicators: Vec<String>,
    rules: Vec<String>,
    /// The fields a join added to the ticks waiting for the watermark.
    #[serde(default)]
    joined: Vec<String>,
}

/// One Kafka partition's event-time state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionState {
    pub partition: i32,
    /// `None` in snapshots of versions that did not record them.
    #[serde(default)]
    settings: Option<Settings>,
    /// The first offset this state has not seen.
    pub next_offset: i64,
    max_time: Option<i64>,
    watermark: Option<i64>,
    pending: BinaryHeap<Reverse<Tick>>,
    symbols: BTreeMap<String, SymbolState>,
    /// The earliest end of any open window (a lower bound; recomputed when passed).
    next_close: Option<i64>,
}

impl PartitionState {
    pub fn new(partition: i32, next_offset: i64) -> Self {
        PartitionState {
            partition,
            settings: None,
            next_offset,
            max_time: None,
            watermark: None,
            pending: BinaryHeap::new(),
            symbols: BTreeMap::new(),
            next_close: None,
        }
    }

    pub fn watermark(&self) -> Option<i64> {
        self.watermark
    }

    /// Ticks waiting for the watermark.
    pub fn buffered(&self) -> usize {
        self.pending.len()
    }

    pub fn open_windows(&self) -> usize {
        self.symbols.values().map(|s| s.bars.len()).sum()
    }

    /// Whether this partition holds anything an idle flush would emit.
    pub fn holds_open_work(&self) -> bool {
        !self.pending.is_empty() || self.symbols.values().any(|s| !s.bars.is_empty())
    }

    pub fn has_symbol(&self, symbol: &str) -> bool {
        self.symbols.contains_key(symbol)
    }
}

impl Spec {
    /// A partition's state before its first tick, recording these settings.
    pub fn state(&self, partition: i32, next_offset: i64) -> PartitionState {
        PartitionState {
            settings: Some(self.settings()),
            ..PartitionState::new(partition, next_offset)
        }
    }

    fn settings(&self) -> Settings {
        Settings {
            window: self.window.map(|w| (w.size, w.slide)),
            session: self.window.is_some_and(|w| w.session),
            indicators: self.indicators.iter().map(|i| i.name.clone()).collect(),
            rules: self.rules.iter().map(|r| r.text.clone()).collect(),
            joined: self.joined.clone(),
        }
    }

    /// Fits restored state to these settings: indicators and rules are matched by name
    /// (new ones start empty, removed ones are dropped), and open windows of another size
    /// or slide are dropped (windows start afresh). Returns what changed, if anything.
    pub fn adopt(&self, st: &mut PartitionState) -> Option<String> {
        let now = self.settings();
        let then = st.settings.replace(now.clone());
        // Older snapshots name nothing: their shape is trusted only if it fits.
        let then = then.unwrap_or_else(|| {
            let fits = st.symbols.values().all(|s| {
                s.indicators.len() == now.indicators.len() && s.sides.len() == now.rules.len()
            });
            if fits {
                now.clone()
            } else {
                Settings {
                    window: now.window,
                    session: now.session,
                    indicators: Vec::new(),
                    rules: Vec::new(),
                    joined: now.joined.clone(),
                }
            }
        });
        if then == now {
            return None;
        }
        let window_changed = (then.window, then.session) != (now.window, now.session);
        for sym in st.symbols.values_mut() {
            let mut old: HashMap<&str, IndicatorState> = then
                .indicators
                .iter()
                .map(String::as_str)
                .zip(std::mem::take(&mut sym.indicators))
                .collect();
            sym.indicators = self
                .indicators
                .iter()
                .map(|i| {
                    old.remove(i.name.as_str())
                        .unwrap_or_else(|| IndicatorState::new(i.kind))
                })
                .collect();
            let old: HashMap<&str, Option<bool>> = then
                .rules
                .iter()
                .map(String::as_str)
                .zip(std::mem::take(&mut sym.sides))
                .collect();
            sym.sides = now
                .rules
                .iter()
                .map(|r| old.get(r.as_str()).copied().flatten())
                .collect();
            if window_changed {
                sym.bars.clear();
            }
        }
        if window_changed {
            st.next_close = None;
        }
        let names = |of: &[String], not_in: &[String]| -> Vec<String> {
            of.iter().filter(|n| !not_in.contains(n)).cloned().collect()
        };
        let mut changes = Vec::new();
        for (what, list) in [
            ("indicators added", names(&now.indicators, &then.indicators)),
            (
                "indicators removed",
                names(&then.indicators, &now.indicators),
            ),
            ("rules added", names(&now.rules, &then.rules)),
            ("rules removed", names(&then.rules, &now.rules)),
        ] {
            if !list.is_empty() {
                changes.push(format!("{what} {list:?}"));
            }
        }
        if window_changed {
            changes.push("the window changed, so open windows start afresh".into());
        }
        if then.joined != now.joined {
            // Waiting ticks carry the old join's values: each field keeps its own, a new
            // field has none.
            let pending = std::mem::take(&mut st.pending).into_vec();
            st.pending = pending
                .into_iter()
                .map(|Reverse(mut tick)| {
                    tick.joined = now
                        .joined
                        .iter()
                        .map(|name| {
                            let old = then.joined.iter().position(|o| o == name);
                            old.and_then(|i| tick.joined.get(i).copied())
                                .unwrap_or(f64::NAN)
                        })
                        .collect();
                    Reverse(tick)
                })
                .collect();
            changes.push(format!(
                "joined fields {:?} instead of {:?}",
                now.joined, then.joined
            ));
        }
        Some(format!(
            "partition {}: state restored from a run with other settings: {}",
            st.partition,
            changes.join("; ")
        ))
    }

    /// Takes one tick; everything it makes ready is handed to `out`.
    pub fn add(&self, st: &mut PartitionState, tick: Tick, out: &mut dyn FnMut(Output)) {
        st.next_offset = st.next_offset.max(tick.offset + 1);
        if let Some(wm) = st.watermark.filter(|wm| tick.time < *wm) {
            out(Output::Late(Late {
                symbol: tick.symbol,
                time: tick.time,
                price: tick.price,
                volume: tick.volume,
                partition: st.partition,
                offset: tick.offset,
                watermark: wm,
            }));
            return;
        }
        let max_time = st.max_time.map_or(tick.time, |m| m.max(tick.time));
        st.max_time = Some(max_time);
        let watermark = max_time.saturating_sub(self.lateness);
        let watermark = st.watermark.map_or(watermark, |wm| wm.max(watermark));
        if st.pending.is_empty() && tick.time <= watermark {
            // In order with nothing waiting (the usual case): no need to queue it.
            st.watermark = Some(watermark);
            self.release(st, tick, out);
            if st.next_close.is_some_and(|c| c <= watermark) {
                self.close_windows(st, watermark, out);
            }
            return;
        }
        st.pending.push(Reverse(tick));
        self.advance(st, watermark, out);
    }

    /// The partition went quiet: release every buffered tick and close every open window,
    /// so the last window of a stream that stops is emitted. Ticks for those windows that
    /// arrive afterwards are late.
    pub fn flush(&self, st: &mut PartitionState, out: &mut dyn FnMut(Output)) {
        let Some(max_time) = st.max_time else {
            return;
        };
        let mut target = max_time.saturating_add(1);
        if let Some(w) = self.window {
            target = target.max(w.latest_end(max_time));
        }
        self.advance(st, target, out);
    }

    /// Moves the watermark up to `watermark` (never back) and releases the ticks at or
    /// before it: a tick at the watermark itself is not late, so nothing can still come
    /// before it.
    fn advance(&self, st: &mut PartitionState, watermark: i64, out: &mut dyn FnMut(Output)) {
        let watermark = st.watermark.map_or(watermark, |wm| wm.max(watermark));
        st.watermark = Some(watermark);
        while st.pending.peek().is_some_and(|t| t.0.time <= watermark) {
            if let Some(Reverse(tick)) = st.pending.pop() {
                self.release(st, tick, out);
            }
        }
        if st.next_close.is_some_and(|c| c <= watermark) {
            self.close_windows(st, watermark, out);
        }
    }

    /// Emits every window ending at or before `until`, symbol by symbol.
    fn close_windows(&self, st: &mut PartitionState, until: i64, out: &mut dyn FnMut(Output)) {
        let Some(w) = self.window else { return };
        let mut next_close: Option<i64> = None;
        for (symbol, sym) in st.symbols.iter_mut() {
            self.close_bars(symbol, sym, w, until, out);
            if let Some(front) = sym.bars.front() {
                let end = front.end(w);
                next_close = Some(next_close.map_or(end, |c| c.min(end)));
            }
        }
        st.next_close = next_close;
    }

    fn close_bars(
        &self,
        symbol: &str,
        sym: &mut SymbolState,
        w: WindowSpec,
        until: i64,
        out: &mut dyn FnMut(Output),
    ) {
        while sym.bars.front().is_some_and(|b| b.end(w) <= until) {
            let Some(open) = sym.bars.pop_front() else {
                break;
            };
            let bar = open.close(symbol, w);
            for rule in &self.rules {
                if let RuleKind::Move(pct) = rule.kind {
                    if bar.change_pct.abs() >= pct && rule.applies_to(symbol) {
                        out(Output::Alert(Alert {
                            symbol: symbol.to_string(),
                            rule: rule.text.clone(),
                            time: bar.end,
                            value: bar.change_pct,
                            direction: if bar.change_pct >= 0.0 { "up" } else { "down" },
                        }));
                    }
                }
            }
            out(Output::Window(bar));
        }
    }

    /// One tick, in event-time order for its partition.
    fn release(&self, st: &mut PartitionState, tick: Tick, out: &mut dyn FnMut(Output)) {
        if !st.symbols.contains_key(&tick.symbol) {
            let state = SymbolState {
                bars: VecDeque::new(),
                indicators: self
                    .indicators
                    .iter()
                    .map(|i| IndicatorState::new(i.kind))
                    .collect(),
                sides: vec![None; self.rules.len()],
            };
            st.symbols.insert(tick.symbol.clone(), state);
        }
        let Some(sym) = st.symbols.get_mut(&tick.symbol) else {
            return;
        };
        if let Some(w) = self.window {
            // Windows ending by now cannot change: ticks arrive here sorted.
            self.close_bars(&tick.symbol, sym, w, tick.time, out);
            if w.session {
                // Ticks come sorted, so a session still open here is the one this tick
                // continues (a late tick bridging two sessions was sorted in between).
                if sym.bars.is_empty() {
                    sym.bars.push_back(OpenBar::new(tick.time, tick.price));
                }
            } else {
                let newest = sym.bars.back().map(|b| b.start);
                let mut start = w.last_start(tick.time);
                let mut missing = Vec::new();
                while start > tick.time - w.size && newest.is_none_or(|n| start > n) {
                    missing.push(start);
                    start -= w.slide;
                }
                sym.bars.extend(
                    missing
                        .into_iter()
                        .rev()
                        .map(|s| OpenBar::new(s, tick.price)),
                );
            }
            for bar in sym.bars.iter_mut() {
                bar.add(tick.time, tick.price, tick.volume);
            }
            if let Some(front) = sym.bars.front() {
                let end = front.end(w);
                st.next_close = Some(st.next_close.map_or(end, |c| c.min(end)));
            }
        }
        if self.indicators.is_empty() && self.rules.is_empty() && self.joined.is_empty() {
            return;
        }
        let mut values: Vec<Option<f64>> =
            sym.indicators.iter_mut().map(|i| i.update(&tick)).collect();
        // A tick restored from a run joining other fields has none of these.
        values.extend(
            (0..self.joined.len()).map(|i| tick.joined.get(i).copied().filter(|v| !v.is_nan())),
        );
        for (rule, side) in self.rules.iter().zip(sym.sides.iter_mut()) {
            let RuleKind::Crosses(left, right) = &rule.kind else {
                continue;
            };
            let (Some(l), Some(r)) = (
                self.operand(left, tick.price, &values),
                self.operand(right, tick.price, &values),
            ) else {
                continue;
            };
            let above = l >= r;
            if side.is_some_and(|was| was != above) && rule.applies_to(&tick.symbol) {
                out(Output::Alert(Alert {
                    symbol: tick.symbol.clone(),
                    rule: rule.text.clone(),
                    time: tick.time,
                    value: l,
                    direction: if above { "above" } else { "below" },
                }));
            }
            *side = Some(above);
        }
        if !self.indicators.is_empty() || !self.joined.is_empty() {
            out(Output::Indicators(Indicators {
                symbol: tick.symbol,
                time: tick.time,
                price: tick.price,
                values,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::spec::parse_duration;

    const MIN: i64 = 60_000_000;

    fn spec(window: &str, slide: Option<&str>, lateness: i64, rules: &[&str]) -> Spec {
        let size = parse_duration(window).unwrap();
        let slide = slide.map(|s| parse_duration(s).unwrap());
        Spec::new(
            Some(WindowSpec::new(size, slide).unwrap()),
            vec![str::parse::<Indicator>("sma_2").unwrap()],
            rules
                .iter()
                .map(|r| str::parse::<Rule>(r).unwrap())
                .collect(),
            lateness,
            Vec::new(),
        )
        .unwrap()
    }

    fn feed(spec: &Spec, st: &mut PartitionState, ticks: &[(i64, f64)]) -> Vec<Output> {
        let mut outs = Vec::new();
        for (i, &(time, price)) in ticks.iter().enumerate() {
            let tick = Tick {
                symbol: "NYA".into(),
                time,
                price,
                volume: 1.0,
                offset: st.next_offset.max(i as i64),
                range: None,
                session: 0,
                joined: Vec::new(),
            };
            spec.add(st, tick, &mut |o| outs.push(o));
        }
        outs
    }

    fn bars(outs: &[Output]) -> Vec<(i64, f64, f64, u64)> {
        outs.iter()
            .filter_map(|o| match o {
                Output::Window(b) => Some((b.start / MIN, b.open, b.close, b.count)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn out_of_order_ticks_within_lateness_are_sorted_into_their_windows() {
        let spec = spec("1m", None, 30_000_000, &[]);
        let mut st = PartitionState::new(0, 0);
        let outs = feed(
            &spec,
            &mut st,
            &[
                (10 * 1_000_000, 1.0),
                (70_000_000, 3.0),
                (50_000_000, 2.0),
                (200_000_000, 4.0),
            ],
        );
        assert_eq!(bars(&outs), [(0, 1.0, 2.0, 2), (1, 3.0, 3.0, 1)]);
        assert!(!outs.iter().any(|o| matches!(o, Output::Late(_))));
        // Behind the watermark (200 s - 30 s): late, counted apart, changes nothing.
        let outs = feed(&spec, &mut st, &[(100_000_000, 9.0)]);
        assert!(matches!(&outs[..], [Output::Late(l)] if l.watermark == 170_000_000));
        let mut outs = Vec::new();
        spec.flush(&mut st, &mut |o| outs.push(o));
        assert_eq!(bars(&outs), [(3, 4.0, 4.0, 1)]);
    }

    #[test]
    fn sessions_end_a_gap_after_their_last_tick_and_a_late_tick_can_join_two() {
        let sessions = |lateness| {
            Spec::new(
                Some(WindowSpec::session(10 * MIN).unwrap()),
                Vec::new(),
                Vec::new(),
                lateness,
                Vec::new(),
            )
            .unwrap()
        };
        let at = |minutes: &[i64]| -> Vec<(i64, f64)> {
            minutes.iter().map(|m| (m * MIN, *m as f64)).collect()
        };
        let ends = |outs: &[Output]| -> Vec<(i64, i64, u64)> {
            (outs.iter())
                .filter_map(|o| match o {
                    Output::Window(b) => Some((b.start / MIN, b.end / MIN, b.count)),
                    _ => None,
                })
                .collect()
        };
        // In order: a gap of exactly 10 minutes starts a new session.
        let spec = sessions(0);
        let mut st = PartitionState::new(0, 0);
        let mut outs = feed(&spec, &mut st, &at(&[0, 4, 9, 19, 20, 45]));
        spec.flush(&mut st, &mut |o| outs.push(o));
        assert_eq!(ends(&outs), [(0, 19, 3), (19, 30, 2), (45, 55, 1)]);
        // Out of order within the lateness: the tick at 9 bridges 0..3 and 16..18.
        let spec = sessions(10 * MIN);
        let mut st = PartitionState::new(0, 0);
        let mut outs = feed(&spec, &mut st, &at(&[0, 3, 16, 18, 9, 40]));
        spec.flush(&mut st, &mut |o| outs.push(o));
        assert_eq!(ends(&outs), [(0, 28, 5), (40, 50, 1)]);
        let bridged = outs.iter().find_map(|o| match o {
            Output::Window(b) if b.count == 5 => Some((b.open, b.close)),
            _ => None,
        });
        assert_eq!(bridged, Some((0.0, 18.0)));
    }

    #[test]
    fn waiting_ticks_restored_under_other_joined_fields_keep_each_fields_value() {
        let joining = |fields: &[&str]| {
            Spec::new(
                None,
                Vec::new(),
                Vec::new(),
                10 * MIN,
                fields.iter().map(|f| f.to_string()).collect(),
            )
            .unwrap()
        };
        let before = joining(&["bid", "ask"]);
        let mut st = before.state(0, 0);
        let tick = Tick {
            symbol: "EURUSD".into(),
            time: MIN,
            price: 1.0,
            volume: 0.0,
            offset: 0,
            range: None,
            session: 0,
            joined: vec![1.1, 1.2],
        };
        before.add(&mut st, tick, &mut |_| panic!("it waits for the watermark"));
        let after = joining(&["ask", "mid"]);
        let note = after.adopt(&mut st).unwrap();
        assert!(note.contains("joined fields"), "{note}");
        let mut outs = Vec::new();
        after.flush(&mut st, &mut |o| outs.push(o));
        match &outs[..] {
            [Output::Indicators(i)] => assert_eq!(i.values, [Some(1.2), None]),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn joined_fields_follow_the_indicators_and_rules_can_name_them() {
        let spec = Spec::new(
            None,
            vec![str::parse::<Indicator>("sma_2").unwrap()],
            vec![str::parse::<Rule>("rate crosses 7").unwrap()],
            0,
            vec!["rate".into()],
        )
        .unwrap();
        assert_eq!(spec.indicator_names(), ["sma_2", "rate"]);
        let mut st = spec.state(0, 0);
        let mut outs = Vec::new();
        for (i, rate) in [6.9, 7.1, 7.2].into_iter().enumerate() {
            let tick = Tick {
                symbol: "USDCNY".into(),
                time: i as i64 * MIN,
                price: 1.0,
                volume: 1.0,
                offset: i as i64,
                range: None,
                session: 0,
                joined: vec![rate],
            };
            spec.add(&mut st, tick, &mut |o| outs.push(o));
        }
        let rates: Vec<Option<f64>> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Indicators(i) => Some(i.values[1]),
                _ => None,
            })
            .collect();
        assert_eq!(rates, [Some(6.9), Some(7.1), Some(7.2)]);
        let alerts: Vec<(i64, f64)> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some((a.time, a.value)),
                _ => None,
            })
            .collect();
        assert_eq!(alerts, [(MIN, 7.1)]);
    }

    fn with_indicators(names: &[&str], window: &str) -> Spec {
        Spec::new(
            Some(WindowSpec::new(parse_duration(window).unwrap(), None).unwrap()),
            names
                .iter()
                .map(|n| str::parse::<Indicator>(n).unwrap())
                .collect(),
            Vec::new(),
            0,
            Vec::new(),
        )
        .unwrap()
    }

    fn last_values(outs: &[Output]) -> Vec<Option<f64>> {
        outs.iter()
            .rev()
            .find_map(|o| match o {
                Output::Indicators(i) => Some(i.values.clone()),
                _ => None,
            })
            .unwrap()
    }

    #[test]
    fn state_restored_under_other_indicators_keeps_the_common_ones_and_starts_the_new() {
        let ticks: Vec<(i64, f64)> = (0..8).map(|i| (i * 1_000_000, 10.0 + i as f64)).collect();
        let before = with_indicators(&["sma_3"], "1m");
        let mut st = before.state(0, 0);
        feed(&before, &mut st, &ticks[..5]);
        let json = serde_json::to_string(&st).unwrap();
        let mut restored: PartitionState = serde_json::from_str(&json).unwrap();
        let after = with_indicators(&["ema_2", "sma_3"], "1m");
        let change = after.adopt(&mut restored).unwrap();
        assert!(change.contains("added [\"ema_2\"]"), "{change}");
        let outs = feed(&after, &mut restored, &ticks[5..6]);
        // sma_3 goes on over ticks 3..=5; ema_2 starts at the price of its first tick.
        assert_eq!(last_values(&outs), [Some(15.0), Some(14.0)]);
        // The same settings again: nothing to migrate.
        assert!(after.adopt(&mut restored).is_none());
        let back = with_indicators(&["sma_3"], "2m");
        let change = back.adopt(&mut restored).unwrap();
        assert!(change.contains("removed [\"ema_2\"]") && change.contains("afresh"));
        assert_eq!(restored.open_windows(), 0);
        let outs = feed(&back, &mut restored, &ticks[6..7]);
        assert_eq!(last_values(&outs), [Some(15.0)]);
    }

    #[test]
    fn hopping_windows_hold_each_tick_in_every_window_covering_it() {
        let spec = spec("2m", Some("1m"), 0, &[]);
        let mut st = PartitionState::new(0, 0);
        let mut outs = feed(&spec, &mut st, &[(30_000_000, 1.0), (90_000_000, 2.0)]);
        spec.flush(&mut st, &mut |o| outs.push(o));
        // Windows starting at -1m, 0 and 1m.
        assert_eq!(
            bars(&outs),
            [(-1, 1.0, 1.0, 1), (0, 1.0, 2.0, 2), (1, 2.0, 2.0, 1)]
        );
    }

    #[test]
    fn alerts_fire_on_crossings_and_moves() {
        let spec = spec("1m", None, 0, &["price crosses 2", "move 50%"]);
        let mut st = PartitionState::new(0, 0);
        let mut outs = feed(&spec, &mut st, &[(0, 1.0), (1, 2.5), (2, 1.5), (MIN, 1.0)]);
        spec.flush(&mut st, &mut |o| outs.push(o));
        let alerts: Vec<(&str, &str)> = outs
            .iter()
            .filter_map(|o| match o {
                Output::Alert(a) => Some((a.rule.as_str(), a.direction)),
                _ => None,
            })
            .collect();
        assert_eq!(
            alerts,
            [
                ("price crosses 2", "above"),
                ("price crosses 2", "below"),
                ("move 50%", "up")
            ]
        );
    }

    #[test]
    fn state_survives_a_round_trip_through_json() {
        let spec = spec("1m", None, 0, &[]);
        let mut st = PartitionState::new(3, 0);
        let mut before = feed(&spec, &mut st, &[(0, 1.0), (1, 2.0)]);
        let json = serde_json::to_string(&st).unwrap();
        let mut restored: PartitionState = serde_json::from_str(&json).unwrap();
        spec.flush(&mut restored, &mut |o| before.push(o));
        assert_eq!(bars(&before), [(0, 1.0, 2.0, 2)]);
        assert_eq!(restored.next_offset, 2);
    }
}
