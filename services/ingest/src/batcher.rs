//! Per-partition batching of captured events into rounds of [`ChangeBatch`]es,
//! and the bookkeeping that decides which binlog position is safe to save.
//!
//! Items arrive in binlog order. A round holds every event buffered so far;
//! once all of a round's batches are confirmed, the last transaction boundary
//! that arrived before the round was cut is durable downstream and can be saved.

use crate::cdc::events::RejectReason;
use crate::cdc::CdcItem;
use crate::store::BinlogPosition;
use mdp_types::{ChangeBatch, ChangeEvent};
use std::time::{Duration, Instant};

/// A rejected event bound for the changes dead-letter queue.
#[derive(Debug, Clone, PartialEq)]
pub struct RejectedEvent {
    pub event: ChangeEvent,
    pub reason: RejectReason,
}

/// The unit of publishing: batches (each partition's in order), rejected
/// events, and the position that becomes safe once all of them are confirmed.
#[derive(Debug, Default)]
pub struct Round {
    /// Batches grouped per partition; within a partition in position order.
    pub partitions: Vec<(u32, Vec<ChangeBatch>)>,
    pub rejected: Vec<RejectedEvent>,
    pub boundary: Option<BinlogPosition>,
}

impl Round {
    /// Number of change events in the round's batches.
    pub fn events(&self) -> usize {
        self.partitions
            .iter()
            .flat_map(|(_, b)| b)
            .map(|b| b.events.len())
            .sum()
    }

    /// Number of batches in the round.
    pub fn batches(&self) -> usize {
        self.partitions.iter().map(|(_, b)| b.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty() && self.rejected.is_empty() && self.boundary.is_none()
    }
}

/// Accumulates items until a partition is full or the oldest item waited long enough.
#[derive(Debug)]
pub struct Batcher {
    max_events: usize,
    max_wait: Duration,
    buffers: Vec<Vec<ChangeEvent>>,
    rejected: Vec<RejectedEvent>,
    boundary: Option<BinlogPosition>,
    first_at: Option<Instant>,
    full: bool,
}

impl Batcher {
    pub fn new(partitions: u32, max_events: usize, max_wait: Duration) -> Self {
        Batcher {
            max_events: max_events.max(1),
            max_wait,
            buffers: (0..partitions.max(1)).map(|_| Vec::new()).collect(),
            rejected: Vec::new(),
            boundary: None,
            first_at: None,
            full: false,
        }
    }

    /// Adds one item read from the source.
    pub fn push(&mut self, item: CdcItem, now: Instant) {
        self.first_at.get_or_insert(now);
        match item {
            CdcItem::Event(e) => {
                let p = (e.partition as usize).min(self.buffers.len() - 1);
                self.buffers[p].push(e);
                if self.buffers[p].len() >= self.max_events {
                    self.full = true;
                }
            }
            CdcItem::Rejected { event, reason } => {
                self.rejected.push(RejectedEvent { event, reason })
            }
            CdcItem::Boundary(pos) => self.boundary = Some(pos),
        }
    }

    /// Whether nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.first_at.is_none()
    }

    /// When the current round must be cut at the latest.
    pub fn deadline(&self) -> Option<Instant> {
        self.first_at.map(|t| t + self.max_wait)
    }

    /// Whether a round should be cut now.
    pub fn ready(&self, now: Instant) -> bool {
        self.full || self.deadline().is_some_and(|d| d <= now)
    }

    /// Cuts a round of everything buffered, splitting partitions into batches
    /// of at most `max_events`.
    pub fn take_round(&mut self) -> Round {
        let mut partitions = Vec::new();
        for (p, buf) in self.buffers.iter_mut().enumerate() {
            if buf.is_empty() {
                continue;
            }
            let events = std::mem::take(buf);
            let mut batches = Vec::with_capacity(events.len().div_ceil(self.max_events));
            let mut it = events.into_iter().peekable();
            while it.peek().is_some() {
                let chunk: Vec<ChangeEvent> = it.by_ref().take(self.max_events).collect();
                batches.push(ChangeBatch {
                    partition: p as u32,
                    events: chunk,
                });
            }
            partitions.push((p as u32, batches));
        }
        self.first_at = None;
        self.full = false;
        Round {
            partitions,
            rejected: std::mem::take(&mut self.rejected),
            boundary: self.boundary.take(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use mdp_types::{EventId, Op, Position, TenantId};

    fn ev(partition: u32, offset: u64, row: u32) -> CdcItem {
        let position = Position {
            file: "binlog.000001".into(),
            offset,
            row,
            snapshot: false,
        };
        CdcItem::Event(ChangeEvent {
            id: EventId::from_position("shop", &position),
            source: "shop".into(),
            table: "orders".into(),
            op: Op::Insert,
            tenant: TenantId("1".into()),
            partition,
            pk: vec![],
            before: None,
            after: None,
            commit_ts_ms: 0,
            position,
            captured_at_ms: 0,
        })
    }

    fn boundary(pos: u64) -> CdcItem {
        CdcItem::Boundary(BinlogPosition {
            file: "binlog.000001".into(),
            pos,
        })
    }

    #[test]
    fn waits_for_deadline_then_cuts_everything_with_last_boundary() {
        let t0 = Instant::now();
        let mut b = Batcher::new(4, 10, Duration::from_millis(50));
        assert!(b.is_empty() && !b.ready(t0));
        b.push(ev(1, 100, 0), t0);
        b.push(ev(3, 100, 1), t0);
        b.push(boundary(120), t0);
        b.push(ev(1, 200, 0), t0);
        assert!(!b.ready(t0 + Duration::from_millis(49)));
        assert!(b.ready(t0 + Duration::from_millis(50)));
        let r = b.take_round();
        assert_eq!(r.events(), 3);
        assert_eq!(
            r.boundary,
            Some(BinlogPosition {
                file: "binlog.000001".into(),
                pos: 120
            })
        );
        let p1 = &r.partitions.iter().find(|(p, _)| *p == 1).unwrap().1;
        assert_eq!(p1.len(), 1);
        let offsets: Vec<u64> = p1[0].events.iter().map(|e| e.position.offset).collect();
        assert_eq!(offsets, vec![100, 200]);
        assert!(b.is_empty());
        assert_eq!(b.take_round().boundary, None);
    }

    #[test]
    fn a_full_partition_cuts_early_and_batches_are_capped() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, 3, Duration::from_secs(60));
        for i in 0..2 {
            b.push(ev(0, 100, i), t0);
        }
        assert!(!b.ready(t0));
        b.push(ev(0, 100, 2), t0);
        assert!(b.ready(t0));
        b.push(ev(0, 100, 3), t0);
        let r = b.take_round();
        let p0 = &r.partitions[0].1;
        assert_eq!(
            p0.iter().map(|x| x.events.len()).collect::<Vec<_>>(),
            vec![3, 1]
        );
        assert!(p0.iter().all(|x| x.partition == 0));
        assert_eq!(r.batches(), 2);
    }

    #[test]
    fn a_boundary_alone_makes_a_round_that_only_saves_the_position() {
        let t0 = Instant::now();
        let mut b = Batcher::new(2, 3, Duration::from_millis(10));
        b.push(boundary(500), t0);
        assert!(b.ready(t0 + Duration::from_millis(10)));
        let r = b.take_round();
        assert_eq!(r.events(), 0);
        assert!(!r.is_empty());
        assert_eq!(r.boundary.unwrap().pos, 500);
    }
}
