//! Which Kafka partitions a sink may land, from which offset, under which claim. The table
//! decides where a partition resumes: at the later of the group's committed offset and the
//! table's landed offset, so a new group, expired group offsets or a restart with another
//! `group_id` land nothing twice. A partition's messages are taken only once its start is
//! settled, and never below it.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

/// The per-partition state of a sink's assignment.
#[derive(Debug, Default)]
pub struct Ownership {
    /// Assigned, start not decided yet: their messages are not taken.
    unsettled: BTreeSet<i32>,
    /// This writer's claim on each partition in the table.
    claims: HashMap<i32, u64>,
    /// The next offset to take of each settled partition: what is below is landed.
    next: HashMap<i32, i64>,
    /// Claimed by another writer since: not landed by this one, and settled again (claimed
    /// back) at the given time if the group still assigns them here by then. An evicted
    /// member learns of it at its next poll; one the group left holding a partition
    /// must not hold it idle for ever.
    fenced: HashMap<i32, Instant>,
    /// After a failed attempt to settle, the next is not made before this.
    retry_at: Option<Instant>,
    delay: Duration,
}

const FIRST_DELAY: Duration = Duration::from_millis(250);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// How long a fenced partition that is still assigned here waits before it is claimed back:
/// long enough for a rebalance that moved it to reach this member first.
pub const FENCE_RECHECK: Duration = Duration::from_secs(5);

/// Where a partition starts: the later of the table's landed offset and the group's
/// committed one; `None` when neither knows (then the consumer's `auto.offset.reset`).
pub fn start(landed: Option<i64>, committed: Option<i64>) -> Option<i64> {
    landed.max(committed)
}

impl Ownership {
    pub fn assigned(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.unsettled.insert(*p);
            self.next.remove(p);
            self.fenced.remove(p);
        }
        self.retry_at = None;
    }

    pub fn revoked(&mut self, partitions: &[i32]) {
        for p in partitions {
            self.unsettled.remove(p);
            self.claims.remove(p);
            self.next.remove(p);
            self.fenced.remove(p);
        }
    }

    /// Partitions whose start is to be decided, if it is time to try: newly assigned ones,
    /// and fenced ones still assigned here after [`FENCE_RECHECK`].
    pub fn due(&mut self, now: Instant) -> Vec<i32> {
        let due: Vec<i32> = (self.fenced.iter())
            .filter(|(_, at)| now >= **at)
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            self.fenced.remove(&p);
            self.unsettled.insert(p);
        }
        if self.retry_at.is_some_and(|t| now < t) {
            return Vec::new();
        }
        self.unsettled.iter().copied().collect()
    }

    /// Whether partitions wait for their start to be decided (or to be claimed back).
    pub fn settling(&self) -> bool {
        !self.unsettled.is_empty() || !self.fenced.is_empty()
    }

    /// An attempt to settle failed: wait longer before the next.
    pub fn failed(&mut self, now: Instant) {
        self.delay = (self.delay * 2).clamp(FIRST_DELAY, MAX_DELAY);
        self.retry_at = Some(now + self.delay);
    }

    /// `partition` starts at `from` (`None`: wherever the consumer starts) under `claim`.
    pub fn settled(&mut self, partition: i32, from: Option<i64>, claim: Option<u64>) {
        self.unsettled.remove(&partition);
        self.next.insert(partition, from.unwrap_or(i64::MIN));
        if let Some(epoch) = claim {
            self.claims.insert(partition, epoch);
        }
        self.delay = Duration::ZERO;
        self.retry_at = None;
    }

    /// Records a claim on `partitions` made after they were settled (when this writer
    /// created the table).
    pub fn claimed(&mut self, partitions: &[i32], epoch: u64) {
        for p in partitions {
            self.claims.insert(*p, epoch);
        }
    }

    /// Settled partitions without a claim (the table did not exist when they were settled).
    pub fn unclaimed(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .next
            .keys()
            .filter(|p| !self.claims.contains_key(p) && !self.fenced.contains_key(p))
            .copied()
            .collect();
        out.sort_unstable();
        out
    }

    /// Whether the message at `offset` of `partition` is to be taken: its partition is
    /// settled and this writer's, and the offset is not landed or taken already.
    pub fn takes(&mut self, partition: i32, offset: i64) -> bool {
        if self.fenced.contains_key(&partition) {
            return false;
        }
        match self.next.get_mut(&partition) {
            Some(next) if offset >= *next => {
                *next = offset + 1;
                true
            }
            _ => false,
        }
    }

    /// `partition` is read again from `offset` (a replay, or the table was ahead).
    pub fn rewind(&mut self, partition: i32, offset: i64) {
        if let Some(next) = self.next.get_mut(&partition) {
            *next = offset;
        }
    }

    /// Another writer claimed `partition`: stop landing it; claim it back at
    /// `now + FENCE_RECHECK` if it is still assigned here then.
    pub fn fence(&mut self, partition: i32, now: Instant) {
        self.claims.remove(&partition);
        self.next.remove(&partition);
        if !self.unsettled.contains(&partition) {
            self.fenced.insert(partition, now + FENCE_RECHECK);
        }
    }

    /// This writer's claim on `partition`.
    pub fn claim(&self, partition: i32) -> Option<u64> {
        self.claims.get(&partition).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_starts_where_the_table_or_the_group_is_further() {
        assert_eq!(start(Some(500), None), Some(500), "a new group");
        assert_eq!(
            start(Some(500), Some(200)),
            Some(500),
            "offsets from another run"
        );
        assert_eq!(start(Some(500), Some(700)), Some(700));
        assert_eq!(start(None, Some(10)), Some(10), "a table not landed yet");
        assert_eq!(start(None, None), None);
    }

    #[test]
    fn messages_are_taken_once_settled_and_never_below_the_start() {
        let mut o = Ownership::default();
        o.assigned(&[0, 1]);
        assert!(!o.takes(0, 0), "not settled yet");
        assert_eq!(o.due(Instant::now()), [0, 1]);
        o.settled(0, Some(100), Some(3));
        o.settled(1, None, None);
        assert!(!o.takes(0, 99));
        assert!(o.takes(0, 100) && o.takes(0, 105), "gaps are fine");
        assert!(!o.takes(0, 101), "an offset already taken");
        assert!(o.takes(1, 0));
        assert_eq!(o.unclaimed(), [1]);
        o.claimed(&o.unclaimed(), 4);
        assert!(o.unclaimed().is_empty());
        assert_eq!((o.claim(0), o.claim(1)), (Some(3), Some(4)));
        o.rewind(0, 100);
        assert!(o.takes(0, 100));
        let now = Instant::now();
        o.fence(1, now);
        assert!(!o.takes(1, 5));
        assert_eq!(o.claim(1), None);
        assert!(o.settling(), "claimed back later");
        assert!(o.due(now).is_empty(), "not at once");
        o.revoked(&[0]);
        assert!(!o.takes(0, 200));
        o.assigned(&[1]);
        o.settled(1, Some(5), Some(9));
        assert!(o.takes(1, 5), "assigned again: landed again");
    }

    #[test]
    fn a_fenced_partition_still_assigned_is_claimed_back_after_a_pause() {
        let mut o = Ownership::default();
        o.assigned(&[0, 1]);
        o.settled(0, Some(10), Some(1));
        o.settled(1, Some(20), Some(1));
        let now = Instant::now();
        o.fence(0, now);
        assert!(!o.takes(0, 10));
        assert_eq!(o.claim(1), Some(1), "the other partition stays claimed");
        assert_eq!(o.due(now + FENCE_RECHECK), [0]);
        o.settled(0, Some(30), Some(2));
        assert!(!o.settling());
        assert!(o.takes(0, 30) && o.claim(0) == Some(2));
    }

    #[test]
    fn a_fence_on_a_partition_assigned_again_waits_for_nothing() {
        let mut o = Ownership::default();
        o.assigned(&[3]);
        o.settled(3, Some(0), Some(1));
        // An eviction: revoked and assigned again before an old landing's refusal arrives.
        o.revoked(&[3]);
        o.assigned(&[3]);
        o.fence(3, Instant::now());
        assert_eq!(o.due(Instant::now()), [3], "settled as a new assignment");
        o.revoked(&[3]);
        assert!(!o.settling());
    }

    #[test]
    fn failed_attempts_back_off() {
        let mut o = Ownership::default();
        o.assigned(&[2]);
        let now = Instant::now();
        assert_eq!(o.due(now), [2]);
        o.failed(now);
        assert!(o.due(now).is_empty());
        assert_eq!(o.due(now + Duration::from_secs(1)), [2]);
        o.failed(now);
        o.failed(now);
        assert!(o.due(now + Duration::from_millis(600)).is_empty());
    }
}
