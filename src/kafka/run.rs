//! The loop every consumer pipeline runs: poll a batch, apply rebalances before any of its
//! messages, hand the messages over, and every ~100 ms check the clock, the caller's stop
//! request and the pipeline's timers.

use std::time::{Duration, Instant};

use super::member::{Change, GroupMember};
use super::queue::Fetched;
use crate::error::Result;

/// How often timers, stop requests and limits are checked.
pub const TICK: Duration = Duration::from_millis(100);
/// Messages taken per poll: enough to amortise the poll, few enough to stay responsive.
const BATCH: usize = 4096;

/// When a `run` ends (besides being asked to stop).
#[derive(Debug, Clone, Default)]
pub struct RunLimits {
    /// After consuming this many messages.
    pub limit: Option<u64>,
    pub duration: Option<Duration>,
    /// Once every assigned partition has been read to its end and processed.
    pub stop_at_end: bool,
}

/// Whether a pipeline goes on after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Asked to stop while output was being retried: what is buffered is given up,
    /// uncommitted, and read again by the next owner.
    Abandon,
}

/// What a consumer pipeline does with what its member brings.
pub trait Pipeline {
    /// Rebalances, applied before any message polled after them.
    fn apply(&mut self, member: &GroupMember, changes: &[Change]) -> Result<()>;
    /// A batch of messages of assigned partitions, in fetch order.
    fn take(
        &mut self,
        member: &GroupMember,
        messages: &[Fetched<'_>],
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<Flow>;
    /// Timers (idle and age rolls, checkpoints), about every [`TICK`].
    fn tick(&mut self, member: &GroupMember, stop: &mut dyn FnMut() -> bool) -> Result<Flow>;
    /// Whether nothing read is left unprocessed (for `stop_at_end`).
    fn drained(&self) -> bool;
    /// Every assigned partition is read to its end and the run stops there (`stop_at_end`):
    /// what waits for more input is released now.
    fn end(&mut self) {}
}

/// Runs `pipeline` on `member` until `limits` or `stop` says so (`stop` is asked every
/// ~100 ms). Returns the flow at the end: `Abandon` if stopped during a retry.
pub fn run(
    member: &GroupMember,
    pipeline: &mut dyn Pipeline,
    limits: &RunLimits,
    stop: &mut dyn FnMut() -> bool,
) -> Result<Flow> {
    let started = Instant::now();
    let mut consumed = 0u64;
    let mut last_tick = Instant::now();
    loop {
        let left = limits
            .limit
            .map_or(u64::MAX, |l| l.saturating_sub(consumed));
        if left == 0 {
            return Ok(Flow::Continue);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            if stop() || limits.duration.is_some_and(|d| started.elapsed() >= d) {
                return Ok(Flow::Continue);
            }
            if pipeline.tick(member, stop)? == Flow::Abandon {
                return Ok(Flow::Abandon);
            }
            if limits.stop_at_end && member.read_to_end() {
                pipeline.end();
                if pipeline.drained() {
                    return Ok(Flow::Continue);
                }
            }
        }
        // A limit takes no more than it needs, so nothing is fetched past it unprocessed.
        let polled = member.poll(left.min(BATCH as u64) as usize, TICK);
        pipeline.apply(member, &polled.changes)?;
        member.settle();
        consumed += polled.messages.len() as u64;
        if !polled.messages.is_empty()
            && pipeline.take(member, &polled.messages, stop)? == Flow::Abandon
        {
            return Ok(Flow::Abandon);
        }
    }
}
