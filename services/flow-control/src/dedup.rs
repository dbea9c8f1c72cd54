//! De-duplication of replayed changes by source position: pure logic.
//! Ingest re-sends changes after a crash; anything at or before the last accepted position is a replay.

use mdp_types::{ChangeEvent, Position};

/// The outcome of checking one batch against the partition's last accepted position.
#[derive(Debug)]
pub struct Admission<'a> {
    /// Events to append, in batch order.
    pub accepted: Vec<&'a ChangeEvent>,
    /// Their indices in the batch.
    pub indices: Vec<usize>,
    /// Events skipped because their position is not after the last accepted one.
    pub duplicates: usize,
    /// The partition's last accepted position once `accepted` is appended.
    pub last_position: Option<Position>,
}

/// Splits `events` into new ones and replays. An event is new when its
/// position is strictly after `last` and after every event accepted before it
/// in the same batch.
pub fn admit<'a>(last: Option<&Position>, events: &'a [ChangeEvent]) -> Admission<'a> {
    let mut current = last.cloned();
    let mut accepted = Vec::with_capacity(events.len());
    let mut indices = Vec::with_capacity(events.len());
    let mut duplicates = 0;
    for (i, event) in events.iter().enumerate() {
        let is_new = current.as_ref().is_none_or(|p| event.position > *p);
        if is_new {
            current = Some(event.position.clone());
            accepted.push(event);
            indices.push(i);
        } else {
            duplicates += 1;
        }
    }
    Admission {
        accepted,
        indices,
        duplicates,
        last_position: current,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mdp_types::{EventId, Op, TenantId, Value};

    pub(crate) fn event(offset: u64, row: u32) -> ChangeEvent {
        let position = Position {
            file: "binlog.000001".into(),
            offset,
            row,
            snapshot: false,
        };
        let mut after = mdp_types::Row::new();
        after.insert("id".into(), Value::I(offset as i64));
        ChangeEvent {
            id: EventId::from_position("shop", &position),
            source: "shop".into(),
            table: "orders".into(),
            op: Op::Insert,
            tenant: TenantId("7".into()),
            partition: 0,
            pk: vec![Value::I(offset as i64)],
            before: None,
            after: Some(after),
            commit_ts_ms: 1_700_000_000_000,
            position,
            captured_at_ms: 1_700_000_000_100,
        }
    }

    fn offsets(a: &Admission<'_>) -> Vec<u64> {
        a.accepted.iter().map(|e| e.position.offset).collect()
    }

    #[test]
    fn first_batch_is_accepted_whole() {
        let events = vec![event(10, 0), event(10, 1), event(20, 0)];
        let a = admit(None, &events);
        assert_eq!(offsets(&a), vec![10, 10, 20]);
        assert_eq!(a.duplicates, 0);
        assert_eq!(a.last_position, Some(events[2].position.clone()));
    }

    #[test]
    fn replay_after_crash_is_skipped() {
        let first = vec![event(10, 0), event(20, 0)];
        let last = admit(None, &first).last_position;
        // Ingest crashed and re-sent from 10; 30 is new.
        let replay = vec![event(10, 0), event(20, 0), event(30, 0)];
        let a = admit(last.as_ref(), &replay);
        assert_eq!(offsets(&a), vec![30]);
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.last_position.map(|p| p.offset), Some(30));
    }

    #[test]
    fn fully_duplicate_batch_keeps_the_last_position() {
        let first = vec![event(10, 0), event(20, 0)];
        let last = admit(None, &first).last_position;
        let a = admit(last.as_ref(), &first);
        assert!(a.accepted.is_empty());
        assert_eq!(a.duplicates, 2);
        assert_eq!(a.last_position, last);
    }

    #[test]
    fn out_of_order_event_inside_a_batch_is_skipped() {
        let events = vec![event(10, 0), event(30, 0), event(20, 0), event(40, 0)];
        let a = admit(None, &events);
        assert_eq!(offsets(&a), vec![10, 30, 40]);
        assert_eq!(a.indices, vec![0, 1, 3]);
        assert_eq!(a.duplicates, 1);
    }

    #[test]
    fn same_offset_later_row_is_new() {
        let last = Some(event(10, 0).position);
        let events = vec![event(10, 0), event(10, 1)];
        let a = admit(last.as_ref(), &events);
        assert_eq!(a.accepted.len(), 1);
        assert_eq!(a.accepted[0].position.row, 1);
    }
}
