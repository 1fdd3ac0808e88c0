//! Where ticks come from: a CSV file (sampled like the tutorial, or replayed in event-time
//! order) or a synthetic generator. Every source hands out chunks of rows of a
//! [`TickTable`], so the producer has one code path for all of them.

mod columns;
pub(crate) mod json;
mod rng;
mod synthetic;
mod table;

use std::path::Path;
use std::sync::Arc;

pub use columns::{Columns, TUTORIAL_COLUMNS};
pub use synthetic::{Synthetic, SyntheticConfig};
pub use table::TickTable;

use crate::error::{Error, Result};
use rng::Rng;

/// Rows per chunk: large enough to amortise per-chunk work, small enough to stop promptly.
const CHUNK_ROWS: usize = 8192;

/// Some rows of a table, in the order they are to be sent.
pub struct Chunk {
    pub table: Arc<TickTable>,
    pub rows: Vec<u32>,
}

/// A stream of ticks.
pub trait TickSource: Send {
    /// The next rows to send, or `None` once the source is exhausted.
    fn next_chunk(&mut self) -> Result<Option<Chunk>>;

    /// Whether a tick's event time is meaningful as the Kafka message timestamp
    /// (false for random sampling, where the tutorial's messages carry the send time).
    fn event_time(&self) -> bool;
}

/// How to walk a CSV file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Random rows with replacement, forever (the tutorial's `df.sample(1)` loop).
    Sample { seed: u64 },
    /// Every row once, in event-time order.
    Replay,
}

impl Mode {
    /// Parses `"sample"` or `"replay"`.
    pub fn parse(name: &str, seed: u64) -> Result<Self> {
        match name {
            "sample" => Ok(Mode::Sample { seed }),
            "replay" => Ok(Mode::Replay),
            other => Err(Error::config(format!(
                "unknown mode {other:?}: expected \"sample\" or \"replay\" (or use a synthetic source)"
            ))),
        }
    }
}

/// A source over a loaded table.
pub struct TableSource {
    table: Arc<TickTable>,
    walk: Walk,
}

enum Walk {
    Sample(Rng),
    Replay { order: Vec<u32>, next: usize },
}

impl TableSource {
    /// Loads and validates `path`, then walks it in `mode`.
    pub fn from_csv(path: &Path, schema: &Columns, mode: Mode) -> Result<Self> {
        Ok(Self::new(
            Arc::new(TickTable::from_csv(path, schema)?),
            mode,
        ))
    }

    /// Walks an already loaded table.
    pub fn new(table: Arc<TickTable>, mode: Mode) -> Self {
        let walk = match mode {
            Mode::Sample { seed } => Walk::Sample(Rng::new(seed)),
            Mode::Replay => Walk::Replay {
                order: table.chronological_order(),
                next: 0,
            },
        };
        TableSource { table, walk }
    }
}

impl TickSource for TableSource {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let rows = match &mut self.walk {
            Walk::Sample(rng) => {
                let n = self.table.len();
                (0..CHUNK_ROWS).map(|_| rng.below(n) as u32).collect()
            }
            Walk::Replay { order, next } => {
                let end = (*next + CHUNK_ROWS).min(order.len());
                let rows = order[*next..end].to_vec();
                *next = end;
                rows
            }
        };
        if rows.is_empty() {
            return Ok(None);
        }
        Ok(Some(Chunk {
            table: Arc::new(self.table.gather(&rows)?),
            rows: (0..rows.len() as u32).collect(),
        }))
    }

    fn event_time(&self) -> bool {
        matches!(self.walk, Walk::Replay { .. })
    }
}

impl TickSource for Synthetic {
    fn next_chunk(&mut self) -> Result<Option<Chunk>> {
        let table = self.next_table(CHUNK_ROWS)?;
        let rows = (0..table.len() as u32).collect();
        Ok(Some(Chunk {
            table: Arc::new(table),
            rows,
        }))
    }

    fn event_time(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(rows: usize) -> Arc<TickTable> {
        let cfg = SyntheticConfig {
            symbols: 3,
            seed: 1,
            start_us: 0,
            interval_us: 1_000_000,
        };
        Arc::new(Synthetic::new(&cfg).unwrap().next_table(rows).unwrap())
    }

    /// Each row of a chunk as (event time, JSON value).
    fn rows_of(chunk: &Chunk) -> Vec<(i64, Vec<u8>)> {
        chunk
            .rows
            .iter()
            .map(|&r| {
                let mut value = Vec::new();
                chunk.table.encode(r as usize, &mut value);
                (chunk.table.time_us(r as usize), value)
            })
            .collect()
    }

    fn values(t: &TickTable) -> Vec<Vec<u8>> {
        let mut all: Vec<Vec<u8>> = (0..t.len())
            .map(|r| {
                let mut value = Vec::new();
                t.encode(r, &mut value);
                value
            })
            .collect();
        all.sort();
        all
    }

    #[test]
    fn replay_sends_every_row_once_in_time_order() {
        let t = table(20_000);
        let mut src = TableSource::new(t.clone(), Mode::Replay);
        let mut seen = Vec::new();
        while let Some(c) = src.next_chunk().unwrap() {
            seen.extend(rows_of(&c));
        }
        assert_eq!(seen.len(), 20_000);
        assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0));
        let mut sent: Vec<Vec<u8>> = seen.into_iter().map(|(_, v)| v).collect();
        sent.sort();
        assert_eq!(sent, values(&t));
    }

    #[test]
    fn sample_is_endless_seeded_and_covers_the_table() {
        let t = table(10);
        let draw = |seed| {
            let mut s = TableSource::new(t.clone(), Mode::Sample { seed });
            rows_of(&s.next_chunk().unwrap().unwrap())
        };
        assert_eq!(draw(5), draw(5));
        assert_ne!(draw(5), draw(6));
        let mut drawn: Vec<Vec<u8>> = draw(5).into_iter().map(|(_, v)| v).collect();
        drawn.sort();
        drawn.dedup();
        assert_eq!(drawn, values(&t));
        assert!(!TableSource::new(t, Mode::Sample { seed: 0 }).event_time());
    }

    #[test]
    fn unknown_mode_is_a_config_error() {
        assert!(matches!(Mode::parse("shuffle", 0), Err(e) if e.is(crate::error::Kind::Config)));
    }
}
