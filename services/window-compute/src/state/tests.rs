use super::*;
use mdp_report::ApplyStats;
use mdp_types::{EventId, Op, Position, Row, TenantId, Value};

const REPORT: &str = "orders_per_merchant";

/// Counts `orders` rows per tenant: +1 per after image, -1 per before image.
/// A change to table `forbidden` fails the window; `boom` panics.
struct CountingEngine;

#[derive(Debug, thiserror::Error)]
enum FakeError {
    #[error("store failed: {0}")]
    Store(String),
    #[error("the window holds a change to the forbidden table")]
    Forbidden,
}

impl RowEngine for CountingEngine {
    type Error = FakeError;

    fn apply_changes<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), FakeError> {
        let store_err = |e: S::Error| FakeError::Store(e.to_string());
        let mut touched: Vec<String> = Vec::new();
        for c in changes {
            match c.table.as_str() {
                "forbidden" => return Err(FakeError::Forbidden),
                "boom" => panic!("engine defect"),
                _ => {}
            }
            let key = c.tenant.0.clone();
            let delta = i64::from(c.after.is_some()) - i64::from(c.before.is_some());
            let current = store
                .load_group(REPORT, &key)
                .map_err(store_err)?
                .map(|b| decode(&b))
                .unwrap_or(0);
            let next = current + delta;
            let bytes = next.to_le_bytes();
            store
                .store_group(REPORT, &key, (next != 0).then_some(&bytes[..]))
                .map_err(store_err)?;
            if !touched.contains(&key) {
                touched.push(key);
            }
        }
        let mut rows = Vec::new();
        for key in touched {
            let count = store
                .load_group(REPORT, &key)
                .map_err(store_err)?
                .map(|b| decode(&b))
                .unwrap_or(0);
            rows.push(ResultRow {
                report: REPORT.into(),
                key: vec![Value::S(key.clone())],
                values: if count == 0 {
                    Vec::new()
                } else {
                    vec![Value::S(key.clone()), Value::I(count)]
                },
                deleted: count == 0,
                tenant: Some(key),
                day: None,
            });
        }
        let stats = ApplyStats {
            changes: changes.len() as u64,
            rows_emitted: rows.len() as u64,
            ..ApplyStats::default()
        };
        Ok((rows, stats))
    }
}

/// Writes a group, then fails: the write must not survive.
struct FailingAfterWrite;

impl RowEngine for FailingAfterWrite {
    type Error = FakeError;

    fn apply_changes<S: StateStore>(
        &self,
        store: &mut S,
        _: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), FakeError> {
        store
            .store_group(REPORT, "7", Some(b"written"))
            .map_err(|e| FakeError::Store(e.to_string()))?;
        Err(FakeError::Forbidden)
    }
}

fn decode(b: &[u8]) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    i64::from_le_bytes(a)
}

fn change(
    seq: u64,
    table: &str,
    tenant: &str,
    op: Op,
    commit_ts_ms: i64,
    captured_at_ms: i64,
) -> ChangeEvent {
    let image: Row = [("merchant_id".to_string(), Value::S(tenant.into()))]
        .into_iter()
        .collect();
    let position = Position {
        file: "binlog.000001".into(),
        offset: seq,
        row: 0,
        snapshot: false,
    };
    ChangeEvent {
        id: EventId::from_position("shop", &position),
        source: "shop".into(),
        table: table.into(),
        op,
        tenant: TenantId(tenant.into()),
        partition: 3,
        pk: vec![Value::I(seq as i64)],
        before: matches!(op, Op::Update | Op::Delete).then(|| image.clone()),
        after: matches!(op, Op::Insert | Op::Update | Op::Snapshot).then_some(image),
        commit_ts_ms,
        position,
        captured_at_ms,
    }
}

fn window(id: WindowId, changes: Vec<ChangeEvent>) -> Window {
    Window {
        partition: 3,
        id,
        first_seq: id * 10,
        last_seq: id * 10 + 9,
        opened_at_ms: 1_000,
        sealed_at_ms: 2_000,
        changes,
    }
}

fn three_windows() -> Vec<Window> {
    vec![
        window(
            1,
            vec![
                change(1, "orders", "a", Op::Insert, 100, 150),
                change(2, "orders", "b", Op::Insert, 110, 140),
            ],
        ),
        window(
            2,
            vec![
                change(3, "orders", "a", Op::Insert, 200, 250),
                change(4, "orders", "b", Op::Delete, 210, 260),
            ],
        ),
        window(3, vec![change(5, "orders", "a", Op::Update, 300, 350)]),
    ]
}

fn rows_of(b: &StoredBatch) -> Vec<ResultRow> {
    let mut rows = b.decode().expect("stored batch decodes").rows;
    rows.sort_by_key(ResultRow::key_text);
    rows
}

#[test]
fn store_round_trip_persists_after_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    assert_eq!(state.path(), dir.path().join("partition-3.sqlite"));
    {
        let tx = state.begin().expect("begin");
        let mut store = SqliteStore::new(&tx);
        assert_eq!(store.load_group("r", "k1").expect("load"), None);
        store.store_group("r", "k1", Some(b"one")).expect("insert");
        store.store_group("r", "k2", Some(b"two")).expect("insert");
        store
            .store_group("other", "k1", Some(b"x"))
            .expect("insert");
        store.store_group("r", "k1", Some(b"uno")).expect("update");
        assert_eq!(
            store.load_group("r", "k1").expect("load"),
            Some(b"uno".to_vec())
        );
        assert_eq!(
            store.groups_of("r").expect("groups"),
            vec![
                ("k1".to_string(), b"uno".to_vec()),
                ("k2".to_string(), b"two".to_vec())
            ]
        );
        store.store_group("r", "k2", None).expect("delete");
        store
            .store_group("r", "missing", None)
            .expect("delete of a missing group");
        assert_eq!(store.load_group("r", "k2").expect("load"), None);
        assert_eq!(store.groups_delta(), 2);
        assert!(!store.failed());
        tx.commit().expect("commit");
    }
    drop(state);

    let mut state = PartitionState::open(dir.path(), 3).expect("reopen");
    let tx = state.begin().expect("begin");
    let mut store = SqliteStore::new(&tx);
    assert_eq!(
        store.load_group("r", "k1").expect("load"),
        Some(b"uno".to_vec())
    );
    assert_eq!(
        store.load_group("other", "k1").expect("load"),
        Some(b"x".to_vec())
    );
    assert_eq!(store.groups_of("r").expect("groups").len(), 1);
}

#[test]
fn rolled_back_transaction_leaves_no_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    {
        let tx = state.begin().expect("begin");
        let mut store = SqliteStore::new(&tx);
        store.store_group("r", "k", Some(b"v")).expect("insert");
        // dropped without commit
    }
    {
        let tx = state.begin().expect("begin");
        let mut store = SqliteStore::new(&tx);
        assert_eq!(store.load_group("r", "k").expect("load"), None);
        assert!(store.groups_of("r").expect("groups").is_empty());
    }

    // An engine failure after a write: nothing of the computation survives.
    let err = state
        .compute(&FailingAfterWrite, &three_windows()[..1], 5_000)
        .expect_err("engine fails");
    assert!(
        matches!(
            err,
            ComputeError::Engine {
                first_window_id: 1,
                window_id: 1,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(state.progress().expect("progress"), Progress::default());
    assert_eq!(state.last_batch().expect("last batch"), None);
    let tx = state.begin().expect("begin");
    assert_eq!(
        SqliteStore::new(&tx).load_group(REPORT, "7").expect("load"),
        None
    );
}

#[test]
fn windows_apply_in_order_and_duplicates_republish_the_stored_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    let ws = three_windows();

    let first = state
        .compute(&CountingEngine, &ws[..1], 5_000)
        .expect("window 1");
    let b1 = first.batch.clone().expect("batch 1");
    assert_eq!((b1.first_window_id, b1.window_id, b1.partition), (1, 1, 3));
    assert_eq!(first.applied, vec![1]);
    assert_eq!(
        first.progress,
        Progress {
            last_applied_window: 1,
            groups: 2
        }
    );
    let decoded = b1.decode().expect("decode");
    assert_eq!(decoded.max_commit_ts_ms, 110);
    assert_eq!(decoded.min_captured_at_ms, 140);
    assert_eq!(decoded.computed_at_ms, 5_000);

    let second = state
        .compute(&CountingEngine, &ws[1..2], 6_000)
        .expect("window 2");
    let b2 = second.batch.clone().expect("batch 2");
    let rows = rows_of(&b2);
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].values, vec![Value::S("a".into()), Value::I(2)]);
    assert!(!rows[0].deleted);
    assert!(rows[1].deleted, "b dropped to zero rows");
    assert!(rows[1].values.is_empty());
    assert_eq!(
        second.progress,
        Progress {
            last_applied_window: 2,
            groups: 1
        }
    );

    // The last applied window again: nothing computed, stored batch returned byte-identical.
    let again = state
        .compute(&CountingEngine, &ws[1..2], 7_000)
        .expect("duplicate");
    assert_eq!(again.batch, None);
    assert_eq!(again.duplicates, vec![2]);
    assert_eq!(again.republish.as_ref().map(|b| &b.json), Some(&b2.json));
    assert_eq!(again.progress, second.progress);

    // An older window: skipped, nothing to re-publish.
    let older = state
        .compute(&CountingEngine, &ws[..1], 8_000)
        .expect("older duplicate");
    assert_eq!(older.duplicates, vec![1]);
    assert_eq!(older.republish, None);
    assert_eq!(older.batch, None);

    // Duplicates and a fresh window together.
    let mixed = state.compute(&CountingEngine, &ws, 9_000).expect("mixed");
    assert_eq!(mixed.duplicates, vec![1, 2]);
    assert_eq!(mixed.republish.as_ref().map(|b| b.window_id), Some(2));
    let b3 = mixed.batch.expect("batch 3");
    assert_eq!((b3.first_window_id, b3.window_id), (3, 3));
    assert_eq!(
        rows_of(&b3)[0].values,
        vec![Value::S("a".into()), Value::I(2)]
    );
    assert_eq!(mixed.progress.last_applied_window, 3);

    // Progress and the stored batch survive a reopen.
    drop(state);
    let mut state = PartitionState::open(dir.path(), 3).expect("reopen");
    assert_eq!(
        state.progress().expect("progress"),
        Progress {
            last_applied_window: 3,
            groups: 1
        }
    );
    assert_eq!(
        state.last_batch().expect("last").map(|b| b.json),
        Some(b3.json)
    );
}

#[test]
fn catch_up_merge_equals_applying_windows_one_by_one() {
    let ws = three_windows();

    let one_by_one = tempfile::tempdir().expect("tempdir");
    let mut seq = PartitionState::open(one_by_one.path(), 3).expect("open");
    let mut latest: std::collections::BTreeMap<String, ResultRow> = Default::default();
    for w in &ws {
        let out = seq
            .compute(&CountingEngine, std::slice::from_ref(w), 5_000)
            .expect("window");
        for row in rows_of(&out.batch.expect("batch")) {
            latest.insert(row.key_text(), row);
        }
    }

    let merged_dir = tempfile::tempdir().expect("tempdir");
    let mut merged = PartitionState::open(merged_dir.path(), 3).expect("open");
    let out = merged.compute(&CountingEngine, &ws, 5_000).expect("merged");
    assert_eq!(out.applied, vec![1, 2, 3]);
    assert_eq!(out.changes, 5);
    let batch = out.batch.expect("batch");
    assert_eq!((batch.first_window_id, batch.window_id), (1, 3));
    let decoded = batch.decode().expect("decode");
    assert_eq!(decoded.max_commit_ts_ms, 300);
    assert_eq!(decoded.min_captured_at_ms, 140);

    let merged_rows = rows_of(&batch);
    assert_eq!(merged_rows, latest.into_values().collect::<Vec<_>>());
    assert_eq!(out.progress, seq.progress().expect("progress"));
    assert_eq!(
        out.progress,
        Progress {
            last_applied_window: 3,
            groups: 1
        }
    );
}

#[test]
fn windows_delivered_out_of_order_or_twice_in_one_batch_fold_once() {
    let ws = three_windows();
    let delivered = vec![ws[1].clone(), ws[0].clone(), ws[1].clone()];
    let p = plan(0, &delivered);
    assert_eq!(p.fresh.iter().map(|w| w.id).collect::<Vec<_>>(), vec![1, 2]);
    assert!(p.duplicates.is_empty());
    assert!(!p.republish_last);

    let p = plan(2, &ws);
    assert_eq!(p.duplicates, vec![1, 2]);
    assert!(p.republish_last);
    assert_eq!(p.fresh.len(), 1);
}

#[test]
fn an_empty_window_keeps_the_previous_commit_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    let ws = three_windows();
    state
        .compute(&CountingEngine, &ws[..1], 5_000)
        .expect("window 1");
    let out = state
        .compute(&CountingEngine, &[window(2, Vec::new())], 6_000)
        .expect("empty");
    let b = out.batch.expect("batch").decode().expect("decode");
    assert!(b.rows.is_empty());
    assert_eq!(b.max_commit_ts_ms, 110);
    assert_eq!(b.min_captured_at_ms, 6_000);
    assert_eq!(out.progress.last_applied_window, 2);
}

#[test]
fn engine_failures_and_panics_roll_back() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    let ws = three_windows();
    state
        .compute(&CountingEngine, &ws[..1], 5_000)
        .expect("window 1");
    let before = state.progress().expect("progress");

    let bad = window(
        2,
        vec![
            change(3, "orders", "a", Op::Insert, 1, 1),
            change(4, "forbidden", "a", Op::Insert, 1, 1),
        ],
    );
    let err = state
        .compute(&CountingEngine, &[bad], 6_000)
        .expect_err("fails");
    assert!(
        matches!(err, ComputeError::Engine { window_id: 2, .. }),
        "{err:?}"
    );
    assert_eq!(state.progress().expect("progress"), before);

    let boom = window(
        2,
        vec![
            change(3, "orders", "a", Op::Insert, 1, 1),
            change(4, "boom", "a", Op::Insert, 1, 1),
        ],
    );
    let err = state
        .compute(&CountingEngine, &[boom], 6_000)
        .expect_err("panics");
    match err {
        ComputeError::EnginePanic {
            window_id, message, ..
        } => {
            assert_eq!(window_id, 2);
            assert_eq!(message, "engine defect");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(state.progress().expect("progress"), before);
    // Nothing of the failed attempts stays behind: window 2 counts
    // merchant a's second order, not a third.
    let out = state
        .compute(&CountingEngine, &ws[1..2], 7_000)
        .expect("window 2");
    let rows = rows_of(&out.batch.expect("batch"));
    assert_eq!(rows[0].values, [Value::S("a".into()), Value::I(2)]);
    let tx = state.begin().expect("begin");
    let count = SqliteStore::new(&tx)
        .load_group(REPORT, "a")
        .expect("load")
        .map(|b| decode(&b));
    assert_eq!(count, Some(2), "only windows 1 and 2 are in the state");
}

#[test]
fn two_handles_on_one_file_see_each_others_commits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ws = three_windows();
    let mut a = PartitionState::open(dir.path(), 3).expect("open a");
    let mut b = PartitionState::open(dir.path(), 3).expect("open b");
    a.compute(&CountingEngine, &ws[..1], 5_000)
        .expect("a applies 1");
    // b takes over: window 1 is a duplicate for it, window 2 is new.
    let out = b
        .compute(&CountingEngine, &ws[..2], 6_000)
        .expect("b continues");
    assert_eq!(out.duplicates, vec![1]);
    assert_eq!(out.applied, vec![2]);
    assert_eq!(a.progress().expect("progress").last_applied_window, 2);
    // a takes the partition back and sees b's window 2 (merchant a has 2
    // orders, not 1).
    let out = a
        .compute(&CountingEngine, &ws[2..], 7_000)
        .expect("a continues");
    assert_eq!(out.applied, vec![3]);
    let rows = rows_of(&out.batch.expect("batch"));
    assert_eq!(rows[0].values, [Value::S("a".into()), Value::I(2)]);
}

#[test]
fn store_failures_are_state_errors_not_window_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    let ws = three_windows();
    state
        .compute(&CountingEngine, &ws[..1], 5_000)
        .expect("window 1");
    state
        .conn
        .execute_batch("DROP TABLE groups")
        .expect("drop groups");

    let err = state
        .compute(&CountingEngine, &ws[1..2], 6_000)
        .expect_err("store fails");
    assert!(
        matches!(err, ComputeError::State(StateError::DuringApply(_))),
        "{err:?}"
    );
    assert_eq!(state.progress().expect("progress").last_applied_window, 1);

    // A reopened state recreates the schema and works again.
    drop(state);
    let mut state = PartitionState::open(dir.path(), 3).expect("reopen");
    let out = state
        .compute(&CountingEngine, &ws[1..2], 7_000)
        .expect("window 2");
    assert_eq!(out.progress.last_applied_window, 2);
}

fn entry(column: &str, value: &str) -> IndexEntry {
    IndexEntry {
        column: column.into(),
        value: value.into(),
    }
}

#[test]
fn row_state_is_stored_indexed_and_rolled_back_with_the_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    {
        let tx = state.begin().expect("begin");
        let mut store = SqliteStore::new(&tx);
        assert_eq!(store.load_row("order_items", "1").expect("load"), None);
        store
            .store_row(
                "order_items",
                "1",
                Some((
                    b"one",
                    &[entry("order_id", "n:7"), entry("product_id", "n:3")],
                )),
            )
            .expect("insert");
        store
            .store_row(
                "order_items",
                "2",
                Some((b"two", &[entry("order_id", "n:7")])),
            )
            .expect("insert");
        store
            .store_row("orders", "7", Some((b"order", &[entry("id", "n:7")])))
            .expect("insert");
        assert_eq!(
            store
                .lookup_rows("order_items", "order_id", "n:7")
                .expect("lookup"),
            ["1", "2"]
        );
        // Replacing a row replaces its index entries.
        store
            .store_row(
                "order_items",
                "1",
                Some((b"uno", &[entry("order_id", "n:8")])),
            )
            .expect("update");
        assert_eq!(
            store
                .lookup_rows("order_items", "order_id", "n:7")
                .expect("lookup"),
            ["2"]
        );
        assert!(store
            .lookup_rows("order_items", "product_id", "n:3")
            .expect("lookup")
            .is_empty());
        assert_eq!(
            store.load_row("order_items", "1").expect("load"),
            Some(b"uno".to_vec())
        );
        assert!(!store.failed());
        tx.commit().expect("commit");
    }
    {
        // Deleted in a transaction that is rolled back: still there.
        let tx = state.begin().expect("begin");
        let mut store = SqliteStore::new(&tx);
        store.store_row("order_items", "2", None).expect("delete");
        store
            .store_row("order_items", "9", None)
            .expect("delete of a missing row");
        assert!(store
            .lookup_rows("order_items", "order_id", "n:7")
            .expect("lookup")
            .is_empty());
    }
    drop(state);
    let mut state = PartitionState::open(dir.path(), 3).expect("reopen");
    let tx = state.begin().expect("begin");
    let mut store = SqliteStore::new(&tx);
    assert_eq!(
        store.rows_of("order_items").expect("rows"),
        vec![
            ("1".to_string(), b"uno".to_vec()),
            ("2".to_string(), b"two".to_vec())
        ]
    );
    assert_eq!(
        store
            .lookup_rows("order_items", "order_id", "n:7")
            .expect("lookup"),
        ["2"]
    );
    assert_eq!(store.rows_of("orders").expect("rows").len(), 1);
    assert!(store.rows_of("products").expect("rows").is_empty());
}

#[test]
fn a_state_file_without_row_tables_is_migrated_on_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = PartitionState::path_for(dir.path(), 3);
    {
        // The layout before row state existed.
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch(
            "CREATE TABLE groups (report TEXT NOT NULL, key TEXT NOT NULL, state BLOB NOT NULL, PRIMARY KEY (report, key));
             CREATE TABLE meta (k TEXT PRIMARY KEY, v);
             INSERT INTO groups VALUES ('r', 'k', x'01');
             INSERT INTO meta VALUES ('last_applied_window', 41), ('groups_count', 1);",
        )
        .expect("old schema");
    }
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    assert_eq!(
        state.progress().expect("progress"),
        Progress {
            last_applied_window: 41,
            groups: 1
        }
    );
    let tx = state.begin().expect("begin");
    let mut store = SqliteStore::new(&tx);
    assert_eq!(store.load_group("r", "k").expect("load"), Some(vec![1]));
    store
        .store_row("orders", "1", Some((b"row", &[entry("id", "n:1")])))
        .expect("row tables exist");
    assert_eq!(
        store.lookup_rows("orders", "id", "n:1").expect("lookup"),
        ["1"]
    );
}

/// Join reports computed through the SQLite state, window by window, give
/// the same rows as the in-memory store, and leave the same row state.
#[test]
fn join_reports_over_sqlite_equal_the_in_memory_store() {
    use mdp_report::{Engine, MemoryStateStore, Report, ReportSet, TenantColumns};
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    let mut tenants = TenantColumns::default();
    tenants.per_table.insert("merchants".into(), "id".into());
    let sqls = [
        (
            "items_by_category",
            "SELECT i.merchant_id, m.city, p.category, COUNT(*) AS n, SUM(i.qty) AS units
             FROM order_items i JOIN orders o ON o.id = i.order_id
             LEFT JOIN products p ON p.id = i.product_id
             JOIN merchants m ON m.id = o.merchant_id
             WHERE o.status = 'paid' GROUP BY i.merchant_id, m.city, p.category",
        ),
        (
            "orders_daily",
            "SELECT merchant_id, COUNT(*) AS n FROM orders GROUP BY merchant_id",
        ),
    ];
    let reports = sqls
        .iter()
        .map(|(n, sql)| Report::parse(n, n, sql, &tenants).expect("report"));
    let engine = Engine::new(Arc::new(ReportSet::from_reports(reports)));

    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut tables: BTreeMap<&str, BTreeMap<i64, Row>> = BTreeMap::new();
    let mut seq = 0u64;
    let mut windows = Vec::new();
    for id in 1..=40u64 {
        let mut changes = Vec::new();
        for _ in 0..rng.random_range(1..12) {
            seq += 1;
            let (table, key, row): (&str, i64, Row) = match rng.random_range(0..10) {
                0 => {
                    let m = rng.random_range(1..=2i64);
                    let city = ["Paris", "Lyon"][rng.random_range(0..2usize)];
                    (
                        "merchants",
                        m,
                        [("id", Value::I(m)), ("city", Value::S(city.into()))]
                            .into_iter()
                            .map(|(k, v)| (k.to_string(), v))
                            .collect(),
                    )
                }
                1 | 2 => {
                    let p = rng.random_range(1..=4i64);
                    let cat = ["toys", "books"][rng.random_range(0..2usize)];
                    (
                        "products",
                        p,
                        [
                            ("id", Value::I(p)),
                            ("merchant_id", Value::I(1)),
                            ("category", Value::S(cat.into())),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    )
                }
                3..=5 => {
                    let o = rng.random_range(1..=8i64);
                    let status = ["paid", "cart"][rng.random_range(0..2usize)];
                    (
                        "orders",
                        o,
                        [
                            ("id", Value::I(o)),
                            ("merchant_id", Value::I(1 + o % 2)),
                            ("status", Value::S(status.into())),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    )
                }
                _ => {
                    let i = rng.random_range(1..=20i64);
                    let o = rng.random_range(1..=8i64);
                    (
                        "order_items",
                        i,
                        [
                            ("id", Value::I(i)),
                            ("merchant_id", Value::I(1 + o % 2)),
                            ("order_id", Value::I(o)),
                            ("product_id", Value::I(rng.random_range(1..=5i64))),
                            ("qty", Value::I(rng.random_range(1..4i64))),
                        ]
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect(),
                    )
                }
            };
            let t = tables.entry(table).or_default();
            let delete = rng.random_range(0..5) == 0;
            let before = t.get(&key).cloned();
            let (op, after) = match (&before, delete) {
                (Some(_), true) => (Op::Delete, None),
                (Some(_), false) => (Op::Update, Some(row)),
                (None, _) => (Op::Insert, Some(row)),
            };
            match &after {
                Some(r) => t.insert(key, r.clone()),
                None => t.remove(&key),
            };
            let mut ev = change(seq, table, "1", op, 0, 0);
            ev.pk = vec![Value::I(key)];
            ev.before = before;
            ev.after = after;
            changes.push(ev);
        }
        windows.push(window(id, changes));
    }

    let sqlite_dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(sqlite_dir.path(), 3).expect("open");
    let mut memory = MemoryStateStore::new();
    let mut from_sqlite: BTreeMap<String, ResultRow> = BTreeMap::new();
    let mut from_memory: BTreeMap<String, ResultRow> = BTreeMap::new();
    let mut emitted = 0;
    for w in &windows {
        let out = state
            .compute(&engine, std::slice::from_ref(w), 5_000)
            .expect("compute");
        assert_eq!(out.stats.row_mismatches, 0, "{:?}", out.stats);
        for row in rows_of(&out.batch.expect("batch")) {
            from_sqlite.insert(format!("{}/{}", row.report, row.key_text()), row);
            emitted += 1;
        }
        for row in engine.apply(&mut memory, &w.changes).expect("memory") {
            from_memory.insert(format!("{}/{}", row.report, row.key_text()), row);
        }
        assert_eq!(from_sqlite, from_memory, "after window {}", w.id);
    }
    assert!(emitted > 40, "the stream produced few rows: {emitted}");
    let tx = state.begin().expect("begin");
    let mut store = SqliteStore::new(&tx);
    for table in engine.row_tables() {
        assert_eq!(
            store.rows_of(&table).expect("rows"),
            memory.rows_of(&table).unwrap_or_default(),
            "rows of {table}"
        );
    }
    // Row updates change only the index entries that differ: the index
    // holds exactly what the in-memory store's does (every key of the
    // stream is an integer from 1 to 20).
    for index in engine.required_indexes() {
        for v in 0..=20 {
            let value = format!("n:{v}");
            assert_eq!(
                store
                    .lookup_rows(&index.table, &index.column, &value)
                    .expect("lookup"),
                memory
                    .lookup_rows(&index.table, &index.column, &value)
                    .unwrap_or_default(),
                "{}.{} = {v}",
                index.table,
                index.column
            );
        }
    }
    let entries: i64 = tx
        .query_row("SELECT COUNT(*) FROM row_index", [], |r| r.get(0))
        .expect("count");
    let expected: usize = engine
        .required_indexes()
        .iter()
        .map(|i| {
            (0..=20)
                .map(|v| {
                    memory
                        .lookup_rows(&i.table, &i.column, &format!("n:{v}"))
                        .map_or(0, |pks| pks.len())
                })
                .sum::<usize>()
        })
        .sum();
    assert_eq!(entries as usize, expected, "no index entry left behind");
}

#[test]
fn reports_across_merchants_publish_partial_deltas() {
    use mdp_report::{merge_partial, partial_row, Engine, Report, ReportSet, TenantColumns};
    use std::sync::Arc;

    let sqls = [
        (
            "by_status",
            "SELECT status, COUNT(*) AS n, COUNT(DISTINCT merchant_id) AS merchants \
             FROM orders GROUP BY status",
        ),
        (
            "per_merchant",
            "SELECT merchant_id, COUNT(*) AS n FROM orders GROUP BY merchant_id",
        ),
    ];
    let reports = sqls
        .iter()
        .map(|(n, sql)| Report::parse(n, n, sql, &TenantColumns::default()).expect("report"));
    let set = Arc::new(ReportSet::from_reports(reports));
    let engine = Engine::new(set.clone());
    let paid = |mut c: ChangeEvent| {
        for image in [c.before.as_mut(), c.after.as_mut()].into_iter().flatten() {
            image.insert("status".into(), Value::S("paid".into()));
        }
        c
    };
    let ws = [
        window(
            1,
            vec![
                paid(change(1, "orders", "a", Op::Insert, 100, 150)),
                paid(change(2, "orders", "b", Op::Insert, 110, 140)),
            ],
        ),
        window(
            2,
            vec![paid(change(3, "orders", "b", Op::Delete, 200, 250))],
        ),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut state = PartitionState::open(dir.path(), 3).expect("open");
    let report = set.get("by_status").expect("by_status");
    let mut merged: Option<Vec<u8>> = None;
    let mut values = Vec::new();
    for (w, expected) in ws.iter().zip([(2, 2), (1, 1)]) {
        let out = state
            .compute(&engine, std::slice::from_ref(w), 5_000)
            .expect("compute");
        let batch = out.batch.expect("batch").decode().expect("decode");
        // Rows only for the report keyed by merchant; deltas for the other.
        assert!(batch.rows.iter().all(|r| r.report == "per_merchant"));
        assert_eq!(batch.partials.len(), 1);
        let delta = &batch.partials[0];
        assert_eq!(
            (delta.report.as_str(), delta.key.clone()),
            ("by_status", vec![Value::S("paid".into())])
        );
        merged = merge_partial(report, merged.as_deref(), delta).expect("merge");
        let row = partial_row(report, &delta.key, merged.as_deref()).expect("row");
        assert_eq!(row.tenant, None);
        values.push(row.values.clone());
        assert_eq!(
            row.values,
            vec![
                Value::S("paid".into()),
                Value::I(expected.0),
                Value::I(expected.1)
            ]
        );
    }
    assert_eq!(values.len(), 2);
}
