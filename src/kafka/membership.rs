//! A pipeline's membership of its consumer group, held only while it runs.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use super::member::{Change, GroupMember};
use super::run::Pipeline;
use super::JobStatus;
use crate::config::KafkaConfig;
use crate::error::{Error, Result};

/// A pipeline's place in its group, held only while it runs: a stopped pipeline (a
/// finished notebook cell, a sink after `stop()`) leaves the group, so the others, or the
/// next run, get its partitions at once rather than after a rebalance timeout.
pub struct Membership {
    kafka: KafkaConfig,
    group_id: String,
    topic: String,
    client_id: &'static str,
    status: Arc<JobStatus>,
    timeout: Duration,
    member: Option<GroupMember>,
}

impl Membership {
    /// Connects at once (see [`GroupMember::connect`]), so that a bad broker or topic fails
    /// here; joins the group when a run starts, so that a job built but not running holds
    /// no partitions the group's running members could read.
    pub fn connect(
        kafka: &KafkaConfig,
        group_id: &str,
        topic: &str,
        client_id: &'static str,
        status: Arc<JobStatus>,
        timeout: Duration,
    ) -> Result<Self> {
        let mut membership = Membership {
            kafka: kafka.clone(),
            group_id: group_id.to_string(),
            topic: topic.to_string(),
            client_id,
            status,
            timeout,
            member: None,
        };
        membership.member()?;
        Ok(membership)
    }

    /// The consumer, made again if an earlier run left the group.
    pub fn member(&mut self) -> Result<&GroupMember> {
        let member = match self.member.take() {
            Some(member) => member,
            None => GroupMember::connect(
                &self.kafka,
                &self.group_id,
                &self.topic,
                self.client_id,
                self.status.clone(),
                self.timeout,
            )?,
        };
        Ok(self.member.insert(member))
    }

    /// Runs `body` as a member, then leaves the group, after telling `pipeline` that every
    /// partition it held is revoked (its per-partition state is the next owner's now).
    pub fn session<P: Pipeline, T>(
        &mut self,
        pipeline: &mut P,
        body: impl FnOnce(&GroupMember, &mut P) -> Result<T>,
    ) -> Result<T> {
        let member = self.member()?;
        member.subscribe()?;
        // A bug in a pipeline must not leave a notebook's job "running" for ever: it ends
        // the run like any error, and the revoke below drops its per-partition state.
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| body(member, pipeline)))
            .unwrap_or_else(|panic| {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(Error::io(format!(
                    "stopped by an internal error (a bug: please report it): {what}"
                )))
            });
        let revoked = Change::Revoked {
            partitions: member.assigned(),
            lost: false,
        };
        let released = pipeline.apply(member, &[revoked]);
        // Dropping the consumer closes it: it leaves the group.
        self.member = None;
        self.status.set_assigned(Vec::new());
        let value = result?;
        released.map(|()| value)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;
    use crate::kafka::Fetched;
    use crate::testing::{self, Sent};

    /// Counts what it is given; panics on its first message if asked to.
    struct Counting {
        panic: bool,
        messages: usize,
        held: HashSet<i32>,
    }

    impl Pipeline for Counting {
        fn apply(&mut self, _: &GroupMember, changes: &[Change]) -> Result<()> {
            for change in changes {
                match change {
                    Change::Assigned(p) => self.held.extend(p),
                    Change::Revoked { partitions, .. } => partitions.iter().for_each(|p| {
                        self.held.remove(p);
                    }),
                }
            }
            Ok(())
        }
        fn take(
            &mut self,
            _: &GroupMember,
            messages: &[Fetched<'_>],
            _: &mut dyn FnMut() -> bool,
        ) -> Result<crate::kafka::Flow> {
            assert!(!self.panic, "poisoned");
            self.messages += messages.len();
            Ok(crate::kafka::Flow::Continue)
        }
        fn tick(
            &mut self,
            _: &GroupMember,
            _: &mut dyn FnMut() -> bool,
        ) -> Result<crate::kafka::Flow> {
            Ok(crate::kafka::Flow::Continue)
        }
        fn drained(&self) -> bool {
            true
        }
    }

    #[test]
    fn a_panicking_run_ends_as_an_error_leaves_the_group_and_can_run_again() {
        let (_kafka, config) = testing::broker("t", 2);
        testing::send(&config, "t", (0..10).map(|i| Sent::value(i.to_string())));
        let timeout = Duration::from_secs(10);
        let mut membership = Membership::connect(
            &config,
            "g",
            "t",
            "test",
            Arc::new(JobStatus::default()),
            timeout,
        )
        .unwrap();
        let limits = testing::to_the_end();
        let mut pipeline = Counting {
            panic: true,
            messages: 0,
            held: HashSet::new(),
        };
        let err = membership
            .session(&mut pipeline, |m, p| {
                crate::kafka::run(m, p, &limits, &mut || false)
            })
            .err()
            .unwrap();
        assert!(err.to_string().contains("internal error") && err.to_string().contains("poisoned"));
        assert!(pipeline.held.is_empty(), "the partitions were not revoked");
        pipeline.panic = false;
        membership
            .session(&mut pipeline, |m, p| {
                crate::kafka::run(m, p, &limits, &mut || false)
            })
            .unwrap();
        assert_eq!(pipeline.messages, 10);
        assert!(pipeline.held.is_empty());
    }
}
