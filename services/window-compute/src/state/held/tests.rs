use super::*;
use crate::state::{ComputeError, RowEngine};
use mdp_report::{ApplyStats, StateStore};
use mdp_types::{ChangeEvent, EventId, Op, Position, ResultRow, Row, TenantId, Value};
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::Path;

const REPORT: &str = "amount_per_merchant";
const P: u32 = 3;

/// Sums `amount` per tenant (+ after image, − before image). A change to a
/// table in `broken` fails the computation, like a report the engine cannot
/// compute until an operator fixes its cause.
#[derive(Default)]
struct SumEngine {
    broken: RefCell<BTreeSet<String>>,
}

impl SumEngine {
    fn break_table(&self, table: &str) {
        self.broken.borrow_mut().insert(table.to_string());
    }

    fn fix(&self) {
        self.broken.borrow_mut().clear();
    }
}

#[derive(Debug, thiserror::Error)]
enum SumError {
    #[error("store failed: {0}")]
    Store(String),
    #[error("table {0} cannot be computed")]
    Broken(String),
}

fn amount(row: &Option<Row>) -> i64 {
    match row.as_ref().and_then(|r| r.get("amount")) {
        Some(Value::I(v)) => *v,
        _ => 0,
    }
}

impl RowEngine for SumEngine {
    type Error = SumError;

    fn apply_changes<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), SumError> {
        let store_err = |e: S::Error| SumError::Store(e.to_string());
        let mut touched: Vec<String> = Vec::new();
        for c in changes {
            if self.broken.borrow().contains(&c.table) {
                return Err(SumError::Broken(c.table.clone()));
            }
            let key = c.tenant.0.clone();
            let current = store
                .load_group(REPORT, &key)
                .map_err(store_err)?
                .map(|b| decode(&b))
                .unwrap_or(0);
            let next = current + amount(&c.after) - amount(&c.before);
            let bytes = next.to_le_bytes();
            store
                .store_group(REPORT, &key, Some(&bytes[..]))
                .map_err(store_err)?;
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let mut rows = Vec::new();
        for key in touched {
            let sum = store
                .load_group(REPORT, &key)
                .map_err(store_err)?
                .map(|b| decode(&b))
                .unwrap_or(0);
            rows.push(ResultRow {
                report: REPORT.into(),
                key: vec![Value::S(key.clone())],
                values: vec![Value::S(key.clone()), Value::I(sum)],
                deleted: false,
                tenant: Some(key),
                day: None,
            });
        }
        Ok((rows, ApplyStats::default()))
    }
}

fn decode(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

/// A window of partition `P` with one insert of `amount` for `tenant` into `table`.
fn window(id: WindowId, table: &str, tenant: &str, amount: i64) -> Window {
    let image: Row = [
        ("merchant_id".to_string(), Value::S(tenant.into())),
        ("amount".to_string(), Value::I(amount)),
    ]
    .into_iter()
    .collect();
    let position = Position {
        file: "binlog.000001".into(),
        offset: id * 100,
        row: 0,
        snapshot: false,
    };
    Window {
        partition: P,
        id,
        first_seq: id * 10,
        last_seq: id * 10,
        opened_at_ms: 1_000,
        sealed_at_ms: 2_000,
        changes: vec![ChangeEvent {
            id: EventId::from_position("shop", &position),
            source: "shop".into(),
            table: table.into(),
            op: Op::Insert,
            tenant: TenantId(tenant.into()),
            partition: P,
            pk: vec![Value::I(id as i64)],
            before: None,
            after: Some(image),
            commit_ts_ms: 10_000 + id as i64,
            position,
            captured_at_ms: 20_000 + id as i64,
        }],
    }
}

/// Windows 1..=4; window 2 is a refund, the table that breaks.
fn four_windows() -> Vec<Window> {
    vec![
        window(1, "orders", "a", 10),
        window(2, "refunds", "a", -4),
        window(3, "orders", "a", 7),
        window(4, "orders", "b", 1),
    ]
}

/// Simulates a SIGKILL between two steps: the connection goes away without
/// anything but committed transactions.
fn crash(state: PartitionState, dir: &Path) -> PartitionState {
    drop(state);
    PartitionState::open(dir, P).expect("reopen")
}

fn groups(state: &mut PartitionState) -> Vec<(String, i64)> {
    let tx = state.begin().expect("begin");
    let mut stmt = tx
        .prepare("SELECT key, state FROM groups ORDER BY key")
        .expect("prepare");
    let rows: Vec<(String, i64)> = stmt
        .query_map([], |r| {
            let b: Vec<u8> = r.get(1)?;
            Ok((r.get(0)?, decode(&b)))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows
}

/// The groups after applying `windows` one by one without any failure.
fn reference(windows: &[Window]) -> Vec<(String, i64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), P).expect("open");
    for w in windows {
        state
            .compute(&SumEngine::default(), std::slice::from_ref(w), 1)
            .expect("reference compute");
    }
    groups(&mut state)
}

fn ids(windows: &[HeldWindow]) -> Vec<WindowId> {
    windows.iter().map(|w| w.window.id).collect()
}

fn next_windows(state: &mut PartitionState, max_windows: usize) -> Vec<HeldWindow> {
    match state.next_held(max_windows, 50_000).expect("next held") {
        NextHeld::Windows(w) => w,
        other => panic!("expected held windows, got {other:?}"),
    }
}

fn waits(state: &mut PartitionState) -> HoldStatus {
    match state.next_held(32, 50_000).expect("next held") {
        NextHeld::Wait(status) => status,
        other => panic!("expected nothing to apply, got {other:?}"),
    }
}

fn compute_held(
    state: &mut PartitionState,
    engine: &SumEngine,
    windows: &[HeldWindow],
) -> Result<crate::state::ComputeOutcome, ComputeError> {
    let ws: Vec<Arc<Window>> = windows.iter().map(|w| w.window.clone()).collect();
    state.compute(engine, &ws, 5_000)
}

#[test]
fn a_parked_window_holds_later_ones_and_they_apply_in_order_once_it_is_back_across_crashes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), P).expect("open");
    let engine = SumEngine::default();
    let ws = four_windows();
    assert!(!state.holding().expect("holding"));
    assert_eq!(
        state.hold_status().expect("status"),
        HoldStatus::default(),
        "a fresh state is not held"
    );

    let b1 = state.compute(&engine, &ws[..1], 1).expect("window 1");
    let b1 = b1.batch.expect("batch 1");

    // Window 2 fails at every attempt and is parked.
    engine.break_table("refunds");
    let failed = state.compute(&engine, &ws[1..2], 2);
    assert!(
        matches!(failed, Err(ComputeError::Engine { .. })),
        "{failed:?}"
    );
    let status = state
        .park(2, "table refunds cannot be computed", 777)
        .expect("park");
    assert_eq!(
        status,
        HoldStatus {
            last_applied_window: 1,
            hold: Some(Hold {
                window_id: 2,
                reason: "table refunds cannot be computed".into(),
                since_ms: 777,
            }),
            parked_windows: 1,
            held_windows: 0,
            ready_windows: 0,
            leftovers: false,
        }
    );
    assert!(state.holding().expect("holding"));

    // Later windows are kept (delivered out of order, one twice), not applied.
    let intake = state
        .hold_windows(&[ws[3].clone(), ws[2].clone(), ws[3].clone()])
        .expect("hold 4, 3");
    assert_eq!(intake.held, vec![4, 3]);
    assert!(intake.duplicates.is_empty() && intake.dropped.is_empty());
    assert_eq!(intake.status.held_windows, 2);
    assert_eq!(intake.status.ready_windows, 0);
    assert_eq!(intake.status.last_applied_window, 1);
    // A redelivery of the last applied window is a duplicate with its batch.
    let again = state.hold_windows(&ws[..1]).expect("hold 1");
    assert_eq!(again.duplicates, vec![1]);
    assert!(again.held.is_empty());
    assert_eq!(again.republish.map(|b| b.json), Some(b1.json.clone()));
    assert_eq!(waits(&mut state).hold.map(|h| h.window_id), Some(2));
    // Parking again keeps the first time.
    state.park(2, "still broken", 999).expect("park again");

    // Nothing of it is lost in a crash; nothing was applied.
    let mut state = crash(state, dir.path());
    let status = state.hold_status().expect("status");
    assert_eq!(
        status.hold.as_ref().map(|h| (h.window_id, h.since_ms)),
        Some((2, 777))
    );
    assert_eq!(
        status.hold.map(|h| h.reason),
        Some("still broken".to_string())
    );
    assert_eq!((status.held_windows, status.ready_windows), (2, 0));
    assert_eq!(state.progress().expect("progress").last_applied_window, 1);
    assert_eq!(groups(&mut state), vec![("a".to_string(), 10)]);

    // The cause is fixed and window 2 is replayed: 2, 3, 4 apply in one computation.
    engine.fix();
    let intake = state.hold_windows(&ws[1..2]).expect("hold 2");
    assert_eq!(intake.held, vec![2]);
    assert_eq!(intake.status.ready_windows, 3);
    assert_eq!(intake.status.hold.map(|h| h.window_id), Some(2));
    let next = next_windows(&mut state, 32);
    assert_eq!(ids(&next), vec![2, 3, 4]);
    assert_eq!(next[1].json, serde_json::to_vec(&ws[2]).expect("json"));
    let outcome = compute_held(&mut state, &engine, &next).expect("compute held");
    let batch = outcome.batch.expect("batch 2..=4");
    assert_eq!((batch.first_window_id, batch.window_id), (2, 4));

    // Killed before the batch was published: it is handed out again.
    let mut state = crash(state, dir.path());
    assert!(state.hold_status().expect("status").leftovers);
    match state.next_held(32, 50_000).expect("next") {
        NextHeld::Republish(Some(b)) => assert_eq!(b.json, batch.json),
        other => panic!("expected the batch again, got {other:?}"),
    }
    // Killed after the publish, before forgetting: handed out again (the
    // result-writer applies a version once).
    let mut state = crash(state, dir.path());
    assert!(matches!(
        state.next_held(32, 50_000).expect("next"),
        NextHeld::Republish(Some(_))
    ));
    let status = state.forget_applied().expect("forget");
    assert_eq!(
        status,
        HoldStatus {
            last_applied_window: 4,
            ..HoldStatus::default()
        }
    );
    assert!(!state.holding().expect("holding"), "hold released");
    assert_eq!(waits(&mut state), status);

    // Late copies of the windows are duplicates; the state equals applying
    // every window once, in order, without any failure.
    let dup = state.compute(&engine, &ws, 6).expect("duplicates");
    assert_eq!(dup.duplicates, vec![1, 2, 3, 4]);
    assert!(dup.batch.is_none());
    assert_eq!(groups(&mut state), reference(&ws));
    assert_eq!(
        groups(&mut state),
        vec![("a".to_string(), 13), ("b".to_string(), 1)]
    );
}

#[test]
fn a_held_window_failing_again_is_parked_only_when_told_and_never_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), P).expect("open");
    let engine = SumEngine::default();
    let mut ws = four_windows();
    ws[2] = window(3, "chargebacks", "a", -1);
    state.compute(&engine, &ws[..1], 1).expect("window 1");
    state.park(2, "broken", 5).expect("park 2");
    state.hold_windows(&ws[2..]).expect("hold 3, 4");

    // Window 2 is back and works; window 3 fails.
    engine.break_table("chargebacks");
    state.hold_windows(&ws[1..2]).expect("hold 2");
    let merged = next_windows(&mut state, 32);
    assert_eq!(ids(&merged), vec![2, 3, 4]);
    assert!(compute_held(&mut state, &engine, &merged).is_err());
    // One at a time after a failed merge.
    let two = next_windows(&mut state, 1);
    assert_eq!(ids(&two), vec![2]);
    compute_held(&mut state, &engine, &two).expect("window 2");
    let status = state.forget_applied().expect("forget");
    assert_eq!(status.hold, None, "window 2 applied: held at nothing");
    assert_eq!((status.held_windows, status.ready_windows), (2, 2));
    let three = next_windows(&mut state, 1);
    assert_eq!(ids(&three), vec![3]);
    assert!(compute_held(&mut state, &engine, &three).is_err());

    // Killed before window 3 was parked (its copy may or may not be in the
    // dead-letter queue): it is still held and comes out again.
    let mut state = crash(state, dir.path());
    assert_eq!(ids(&next_windows(&mut state, 1)), vec![3]);
    let status = state.park(3, "chargebacks broken", 9).expect("park 3");
    assert_eq!(status.hold.map(|h| h.window_id), Some(3));
    assert_eq!((status.held_windows, status.ready_windows), (1, 0));
    assert_eq!(waits(&mut state).parked_windows, 1);

    // Replayed after the fix: 3 and 4 apply.
    engine.fix();
    state.hold_windows(&ws[2..3]).expect("hold 3");
    let rest = next_windows(&mut state, 32);
    assert_eq!(ids(&rest), vec![3, 4]);
    compute_held(&mut state, &engine, &rest).expect("3, 4");
    state.forget_applied().expect("forget");
    assert!(!state.holding().expect("holding"));
    assert_eq!(groups(&mut state), reference(&ws));
}

#[test]
fn windows_before_the_parked_one_apply_first_and_later_ones_wait() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), P).expect("open");
    let engine = SumEngine::default();
    let ws = four_windows();
    state.compute(&engine, &ws[..1], 1).expect("window 1");
    // Window 3 parked while window 2 had not arrived yet (it was
    // dead-lettered for another reason and is replayed later).
    state.park(3, "broken", 5).expect("park 3");
    state.hold_windows(&ws[3..4]).expect("hold 4");
    state.hold_windows(&ws[1..2]).expect("hold 2");
    let next = next_windows(&mut state, 32);
    assert_eq!(ids(&next), vec![2], "only the window before the parked one");
    compute_held(&mut state, &engine, &next).expect("window 2");
    let status = state.forget_applied().expect("forget");
    assert_eq!(status.hold.map(|h| h.window_id), Some(3));
    assert_eq!((status.held_windows, status.ready_windows), (1, 0));
    assert_eq!(status.last_applied_window, 2);
}

#[test]
fn an_operator_skip_drops_the_parked_window_and_releases_the_held_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), P).expect("open");
    let engine = SumEngine::default();
    let ws = four_windows();
    assert!(matches!(
        state.skip_parked(2),
        Err(SkipError::NotHeld { partition: P })
    ));
    state.compute(&engine, &ws[..1], 1).expect("window 1");
    state.park(2, "broken", 5).expect("park 2");
    assert!(matches!(
        state.skip_parked(3),
        Err(SkipError::OtherWindow {
            held_at: 2,
            requested: 3,
            ..
        })
    ));
    let status = state.skip_parked(2).expect("skip 2");
    assert_eq!(status.hold, None);
    // Window 2 arriving later (a replay) is dropped, not applied.
    let intake = state.hold_windows(&ws[1..3]).expect("deliveries");
    assert_eq!(intake.dropped, vec![2]);
    assert_eq!(intake.held, vec![3]);
    let next = next_windows(&mut state, 32);
    assert_eq!(ids(&next), vec![3]);
    compute_held(&mut state, &engine, &next).expect("window 3");
    state.forget_applied().expect("forget");
    assert!(!state.holding().expect("holding"));
    assert_eq!(groups(&mut state), vec![("a".to_string(), 17)]);
}
