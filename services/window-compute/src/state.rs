//! Per-partition compute state: one SQLite file per partition holding every
//! report's group states, the current rows of the tables reports with joins
//! read (with their join-column index), and the partition's progress (last
//! applied window).
//!
//! Schema: `groups(report, key, state)` (also the sub-aggregates of rolled-up
//! dimensions, under `{report}/{table}`), `rows(tbl, pk, row)`,
//! `row_index(tbl, col, val, pk)`, `meta(k, v)`, and `parked`/`held` for a
//! partition held at a dead-lettered window (see [`held`]). Every table is created
//! when missing, so a state file written before reports with joins existed
//! opens as is and gains the row tables (empty: re-snapshot the tables a
//! new join report reads).
//!
//! Durability: WAL journal with `synchronous=FULL`. A window is acknowledged
//! only after its state transaction committed, so the commit must survive
//! both a killed process and a machine crash: WAL + `NORMAL` survives a
//! SIGKILL but may lose the last commits on power loss, and a lost commit
//! would be a window acknowledged but never applied. `FULL` costs one extra
//! fsync per transaction, and with catch-up merging there is one transaction
//! per computation, not per window, which keeps that cost bounded.
//!
//! Sharing: several replicas may open the same file (on one machine they
//! share the state directory). Every computation runs in a `BEGIN IMMEDIATE`
//! transaction that takes SQLite's write lock up front, and progress is read
//! inside that transaction, never cached in memory, so a replica taking a
//! partition over continues exactly where the previous owner committed.

use mdp_report::{ApplyStats, IndexEntry, StateStore};
use mdp_types::{ChangeEvent, PartialDelta, ResultBatch, ResultRow, Window, WindowId};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::borrow::{Borrow, Cow};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS groups (
    report TEXT NOT NULL,
    key    TEXT NOT NULL,
    state  BLOB NOT NULL,
    PRIMARY KEY (report, key)
);
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v
);
CREATE TABLE IF NOT EXISTS rows (
    tbl TEXT NOT NULL,
    pk  TEXT NOT NULL,
    row BLOB NOT NULL,
    PRIMARY KEY (tbl, pk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS row_index (
    tbl TEXT NOT NULL,
    col TEXT NOT NULL,
    val TEXT NOT NULL,
    pk  TEXT NOT NULL,
    PRIMARY KEY (tbl, col, val, pk)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS row_index_by_row ON row_index (tbl, pk);
";

const META_LAST_APPLIED: &str = "last_applied_window";
const META_LAST_RESULT: &str = "last_result_batch";
const META_GROUPS: &str = "groups_count";

/// SQLite page cache per partition file, KiB. Bounds the process's memory
/// for state pages: partitions × this (16 MiB each, 128 MiB for 8).
const CACHE_KIB: i64 = 16 * 1024;

/// Bytes of each partition file SQLite reads through a memory map: page
/// reads come straight from the OS page cache (file-backed memory the
/// kernel reclaims under pressure) instead of a copy per read.
const MMAP_BYTES: i64 = 1 << 30;

/// WAL pages after which a commit copies the WAL back into the database
/// file. A page changed by many windows in a row is copied once per
/// checkpoint, so a larger WAL costs fewer writes per window (SQLite's
/// default is 1,000 pages).
const WAL_CHECKPOINT_PAGES: i64 = 8_000;

/// How long a statement waits for another process holding the write lock
/// (a replica finishing its last computation during a hand-over).
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Errors of the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("failed to create the state directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open the state file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("state database operation failed")]
    Sqlite(#[from] rusqlite::Error),
    #[error("the stored result batch cannot be read")]
    StoredBatch(#[source] serde_json::Error),
    #[error("failed to serialize the result batch")]
    Serialize(#[source] serde_json::Error),
    /// A store operation failed while the report engine ran; the engine
    /// passed the failure on as its own error.
    #[error("state store failed during a report computation")]
    DuringApply(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The thread owning the partition's state is gone.
    #[error("the state keeper of the partition is not running: {0}")]
    KeeperStopped(String),
}

/// Errors of one computation.
#[derive(Debug, thiserror::Error)]
pub enum ComputeError {
    /// The state store failed: nothing was committed; retry later.
    #[error("state store failed")]
    State(#[from] StateError),
    /// The report engine rejected the changes of these windows.
    #[error("report engine failed on windows {first_window_id}..={window_id}")]
    Engine {
        first_window_id: WindowId,
        window_id: WindowId,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The report engine panicked: a defect in the engine, handled like a
    /// failing window so one bad window cannot take the service down.
    #[error("report engine panicked on windows {first_window_id}..={window_id}: {message}")]
    EnginePanic {
        first_window_id: WindowId,
        window_id: WindowId,
        message: String,
    },
}

impl From<rusqlite::Error> for ComputeError {
    fn from(e: rusqlite::Error) -> Self {
        ComputeError::State(StateError::Sqlite(e))
    }
}

/// What the state layer needs from the report engine. Implemented by
/// [`mdp_report::Engine`]; tests use small deterministic engines.
pub trait RowEngine {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Applies the changes (in order) to the state and returns each changed
    /// group's new absolute row, with the engine's counters.
    fn apply_changes<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), Self::Error>;

    /// [`RowEngine::apply_changes`] that also returns the accumulator
    /// differences of reports not keyed by merchant (whose groups span
    /// partitions; result-writer merges them). Engines without such reports
    /// return none.
    fn apply_split<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, Vec<PartialDelta>, ApplyStats), Self::Error> {
        self.apply_changes(store, changes)
            .map(|(rows, stats)| (rows, Vec::new(), stats))
    }
}

impl RowEngine for mdp_report::Engine {
    type Error = mdp_report::EngineError;

    fn apply_changes<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), Self::Error> {
        self.apply_with_stats(store, changes)
    }

    fn apply_split<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, Vec<PartialDelta>, ApplyStats), Self::Error> {
        self.apply_batch(store, changes)
            .map(|a| (a.rows, a.partials, a.stats))
    }
}

/// [`StateStore`] over an open SQLite transaction: everything the engine
/// writes becomes visible together with the progress when the transaction
/// commits, or not at all.
pub struct SqliteStore<'t> {
    conn: &'t Connection,
    groups_delta: i64,
    failed: bool,
}

impl<'t> SqliteStore<'t> {
    /// A store writing into `tx`.
    pub fn new(tx: &'t Transaction<'_>) -> Self {
        SqliteStore {
            conn: tx,
            groups_delta: 0,
            failed: false,
        }
    }

    /// Groups created minus groups deleted through this store.
    pub fn groups_delta(&self) -> i64 {
        self.groups_delta
    }

    /// Whether any store operation failed (so an engine error that follows
    /// is a state problem, not a problem of the window).
    pub fn failed(&self) -> bool {
        self.failed
    }

    fn track<T>(&mut self, r: Result<T, rusqlite::Error>) -> Result<T, rusqlite::Error> {
        if r.is_err() {
            self.failed = true;
        }
        r
    }

    fn load(&self, report: &str, key: &str) -> Result<Option<Vec<u8>>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT state FROM groups WHERE report = ?1 AND key = ?2")?
            .query_row(params![report, key], |r| r.get(0))
            .optional()
    }

    fn store(
        &mut self,
        report: &str,
        key: &str,
        state: Option<&[u8]>,
    ) -> Result<(), rusqlite::Error> {
        match state {
            None => {
                let n = self
                    .conn
                    .prepare_cached("DELETE FROM groups WHERE report = ?1 AND key = ?2")?
                    .execute(params![report, key])?;
                self.groups_delta -= n as i64;
            }
            Some(state) => {
                let n = self
                    .conn
                    .prepare_cached("UPDATE groups SET state = ?3 WHERE report = ?1 AND key = ?2")?
                    .execute(params![report, key, state])?;
                if n == 0 {
                    self.conn
                        .prepare_cached(
                            "INSERT INTO groups (report, key, state) VALUES (?1, ?2, ?3)",
                        )?
                        .execute(params![report, key, state])?;
                    self.groups_delta += 1;
                }
            }
        }
        Ok(())
    }

    fn all_of(&self, report: &str) -> Result<Vec<(String, Vec<u8>)>, rusqlite::Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key, state FROM groups WHERE report = ?1 ORDER BY key")?;
        let rows = stmt.query_map(params![report], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }

    /// Groups of `report` whose key starts with `prefix`: keys compare as
    /// UTF-8 bytes (BINARY), so they lie in `[prefix, successor(prefix))`.
    fn with_prefix(
        &self,
        report: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, rusqlite::Error> {
        let mut upper = prefix.to_string();
        let last = upper.pop();
        // The string just above every string starting with `prefix`: its
        // last character incremented (none for an empty prefix or U+10FFFF).
        let successor = last.and_then(|c| {
            let next = (u32::from(c) + 1..=0x10ffff).find_map(char::from_u32)?;
            upper.push(next);
            Some(upper)
        });
        let mut stmt = self.conn.prepare_cached(
            "SELECT key, state FROM groups WHERE report = ?1 AND key >= ?2
               AND (?3 IS NULL OR key < ?3) ORDER BY key",
        )?;
        let rows = stmt.query_map(params![report, prefix, successor], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (key, state) = row?;
            if !key.starts_with(prefix) {
                break;
            }
            out.push((key, state));
        }
        Ok(out)
    }

    fn row(&self, table: &str, pk: &str) -> Result<Option<Vec<u8>>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT row FROM rows WHERE tbl = ?1 AND pk = ?2")?
            .query_row(params![table, pk], |r| r.get(0))
            .optional()
    }

    fn put_row(
        &self,
        table: &str,
        pk: &str,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached("DELETE FROM row_index WHERE tbl = ?1 AND pk = ?2")?
            .execute(params![table, pk])?;
        match row {
            None => {
                self.conn
                    .prepare_cached("DELETE FROM rows WHERE tbl = ?1 AND pk = ?2")?
                    .execute(params![table, pk])?;
            }
            Some((image, entries)) => self.put_image(table, pk, image, entries.iter())?,
        }
        Ok(())
    }

    /// Writes a row's image and adds index entries (keeping those it has).
    fn put_image<'e>(
        &self,
        table: &str,
        pk: &str,
        image: &[u8],
        entries: impl Iterator<Item = &'e IndexEntry>,
    ) -> Result<(), rusqlite::Error> {
        self.conn
            .prepare_cached(
                "INSERT INTO rows (tbl, pk, row) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tbl, pk) DO UPDATE SET row = excluded.row",
            )?
            .execute(params![table, pk, image])?;
        let mut insert = self.conn.prepare_cached(
            "INSERT OR IGNORE INTO row_index (tbl, col, val, pk) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for e in entries {
            insert.execute(params![table, e.column, e.value, pk])?;
        }
        Ok(())
    }

    /// [`Self::put_row`] knowing the row's stored index entries: only the
    /// entries that differ are written.
    fn replace(
        &self,
        table: &str,
        pk: &str,
        stored: Option<&[IndexEntry]>,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), rusqlite::Error> {
        match (stored, row) {
            // A deleted row loses every entry it has.
            (_, None) => self.put_row(table, pk, None)?,
            (None, Some((image, entries))) => self.put_image(table, pk, image, entries.iter())?,
            (Some(stored), Some((image, entries))) => {
                for e in stored.iter().filter(|e| !entries.contains(e)) {
                    self.conn
                        .prepare_cached(
                            "DELETE FROM row_index WHERE tbl = ?1 AND col = ?2 AND val = ?3 AND pk = ?4",
                        )?
                        .execute(params![table, e.column, e.value, pk])?;
                }
                let added = entries.iter().filter(|e| !stored.contains(e));
                self.put_image(table, pk, image, added)?;
            }
        }
        Ok(())
    }

    fn lookup(
        &self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, rusqlite::Error> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT pk FROM row_index WHERE tbl = ?1 AND col = ?2 AND val = ?3 ORDER BY pk",
        )?;
        let pks = stmt.query_map(params![table, column, value], |r| r.get(0))?;
        pks.collect()
    }

    fn table_rows(&self, table: &str) -> Result<Vec<(String, Vec<u8>)>, rusqlite::Error> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT pk, row FROM rows WHERE tbl = ?1 ORDER BY pk")?;
        let rows = stmt.query_map(params![table], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
}

impl StateStore for SqliteStore<'_> {
    type Error = rusqlite::Error;

    fn load_group(&mut self, report: &str, key: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        let r = self.load(report, key);
        self.track(r)
    }

    fn store_group(
        &mut self,
        report: &str,
        key: &str,
        state: Option<&[u8]>,
    ) -> Result<(), Self::Error> {
        let r = self.store(report, key, state);
        self.track(r)
    }

    fn groups_of(&mut self, report: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        let r = self.all_of(report);
        self.track(r)
    }

    fn groups_with_prefix(
        &mut self,
        report: &str,
        prefix: &str,
    ) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        let r = self.with_prefix(report, prefix);
        self.track(r)
    }

    fn load_row(&mut self, table: &str, pk: &str) -> Result<Option<Vec<u8>>, Self::Error> {
        let r = self.row(table, pk);
        self.track(r)
    }

    fn store_row(
        &mut self,
        table: &str,
        pk: &str,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error> {
        let r = self.put_row(table, pk, row);
        self.track(r)
    }

    fn replace_row(
        &mut self,
        table: &str,
        pk: &str,
        stored: Option<&[IndexEntry]>,
        row: Option<(&[u8], &[IndexEntry])>,
    ) -> Result<(), Self::Error> {
        let r = self.replace(table, pk, stored, row);
        self.track(r)
    }

    fn lookup_rows(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, Self::Error> {
        let r = self.lookup(table, column, value);
        self.track(r)
    }

    fn rows_of(&mut self, table: &str) -> Result<Vec<(String, Vec<u8>)>, Self::Error> {
        let r = self.table_rows(table);
        self.track(r)
    }
}

/// A result batch as stored and published: the exact JSON bytes, so a
/// re-publish is byte-identical to the first publish.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredBatch {
    pub partition: u32,
    pub window_id: WindowId,
    pub first_window_id: WindowId,
    pub rows: usize,
    pub json: Vec<u8>,
}

impl StoredBatch {
    fn from_batch(batch: &ResultBatch) -> Result<Self, StateError> {
        Ok(StoredBatch {
            partition: batch.partition,
            window_id: batch.window_id,
            first_window_id: batch.first_window_id,
            rows: batch.rows.len(),
            json: serde_json::to_vec(batch).map_err(StateError::Serialize)?,
        })
    }

    fn from_json(json: Vec<u8>) -> Result<Self, StateError> {
        let batch: ResultBatch = serde_json::from_slice(&json).map_err(StateError::StoredBatch)?;
        Ok(StoredBatch {
            partition: batch.partition,
            window_id: batch.window_id,
            first_window_id: batch.first_window_id,
            rows: batch.rows.len(),
            json,
        })
    }

    /// The batch itself.
    pub fn decode(&self) -> Result<ResultBatch, StateError> {
        serde_json::from_slice(&self.json).map_err(StateError::StoredBatch)
    }
}

/// A partition's progress as committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Highest window id whose changes are in the state (0: none yet).
    pub last_applied_window: WindowId,
    /// Number of stored group states across all reports: groups,
    /// sub-aggregates of rolled-up dimensions and multiset chunks.
    pub groups: i64,
}

/// The result of one computation over one or several windows.
#[derive(Debug, Clone, PartialEq)]
pub struct ComputeOutcome {
    /// Windows at or below the last applied window: not computed again.
    pub duplicates: Vec<WindowId>,
    /// The stored batch of the last applied window, when that window was
    /// delivered again: it is published again because a crash may have
    /// happened between the commit and the publish.
    pub republish: Option<StoredBatch>,
    /// The new batch for the windows above the last applied one.
    pub batch: Option<StoredBatch>,
    /// Windows folded into `batch`.
    pub applied: Vec<WindowId>,
    /// Changes folded into `batch`.
    pub changes: usize,
    /// The engine's counters for `batch` (default when nothing was computed).
    pub stats: ApplyStats,
    /// Progress after the computation.
    pub progress: Progress,
}

/// Which of the delivered windows are new, given the last applied window.
#[derive(Debug, PartialEq)]
pub struct Plan<'a> {
    pub duplicates: Vec<WindowId>,
    /// A window equal to the last applied one was delivered.
    pub republish_last: bool,
    /// New windows in increasing id order, each once.
    pub fresh: Vec<&'a Window>,
}

/// Splits delivered windows into duplicates and new windows.
pub fn plan<W: Borrow<Window>>(last_applied: WindowId, windows: &[W]) -> Plan<'_> {
    let mut duplicates = Vec::new();
    let mut fresh: Vec<&Window> = Vec::new();
    for w in windows {
        let w: &Window = w.borrow();
        if w.id <= last_applied {
            duplicates.push(w.id);
        } else {
            fresh.push(w);
        }
    }
    // Deliveries of one queue arrive in publish order; a window delivered
    // twice in one batch (a re-publish by flow-control) is folded once.
    fresh.sort_by_key(|w| w.id);
    fresh.dedup_by_key(|w| w.id);
    Plan {
        republish_last: last_applied > 0 && duplicates.contains(&last_applied),
        duplicates,
        fresh,
    }
}

/// Builds the batch of the merged fresh windows. Empty windows carry the
/// previous batch's commit time forward so freshness never goes back.
pub fn result_batch(
    partition: u32,
    fresh: &[&Window],
    rows: Vec<ResultRow>,
    computed_at_ms: i64,
    previous_max_commit_ts_ms: i64,
) -> ResultBatch {
    let changes = fresh.iter().flat_map(|w| w.changes.iter());
    let max_commit_ts_ms = changes.clone().map(|c| c.commit_ts_ms).max();
    let min_captured_at_ms = changes.map(|c| c.captured_at_ms).min();
    ResultBatch {
        partition,
        window_id: fresh.last().map(|w| w.id).unwrap_or_default(),
        first_window_id: fresh.first().map(|w| w.id).unwrap_or_default(),
        computed_at_ms,
        max_commit_ts_ms: max_commit_ts_ms.unwrap_or(previous_max_commit_ts_ms),
        min_captured_at_ms: min_captured_at_ms.unwrap_or(computed_at_ms),
        rows,
        partials: Vec::new(),
    }
}

/// The open state of one partition.
pub struct PartitionState {
    partition: u32,
    path: PathBuf,
    conn: Connection,
}

impl PartitionState {
    /// The state file of `partition` in `dir`.
    pub fn path_for(dir: &Path, partition: u32) -> PathBuf {
        dir.join(format!("partition-{partition}.sqlite"))
    }

    /// Opens (creating when missing) the state file of `partition`.
    pub fn open(dir: &Path, partition: u32) -> Result<Self, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = Self::path_for(dir, partition);
        let conn = Self::connect(&path).map_err(|source| StateError::Open {
            path: path.clone(),
            source,
        })?;
        Ok(PartitionState {
            partition,
            path,
            conn,
        })
    }

    fn connect(path: &Path) -> Result<Connection, rusqlite::Error> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "journal_mode is {mode}, WAL is required"
            )));
        }
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Reads go through a memory map of the file (no copy per page read)
        // and a transaction's dirty pages stay in the page cache instead of
        // spilling to the WAL mid-transaction; see CACHE_KIB / MMAP_BYTES.
        conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
        conn.pragma_update(None, "mmap_size", MMAP_BYTES)?;
        conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(held::SCHEMA)?;
        Ok(conn)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The committed progress.
    pub fn progress(&mut self) -> Result<Progress, StateError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Deferred)?;
        let p = read_progress(&tx)?;
        tx.commit()?;
        Ok(p)
    }

    /// The stored batch of the last applied window.
    pub fn last_batch(&self) -> Result<Option<StoredBatch>, StateError> {
        read_last_batch(&self.conn)
    }

    /// Starts a write transaction (for tests and maintenance).
    pub fn begin(&mut self) -> Result<Transaction<'_>, StateError> {
        Ok(self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?)
    }

    /// Applies the delivered windows in one transaction: windows at or below
    /// the last applied one are skipped (the stored batch is returned for a
    /// re-publish when the last applied window is among them), the others are
    /// folded into one engine call whose batch is stored with the new
    /// progress. Nothing is written unless everything succeeds.
    pub fn compute<E: RowEngine, W: Borrow<Window>>(
        &mut self,
        engine: &E,
        windows: &[W],
        computed_at_ms: i64,
    ) -> Result<ComputeOutcome, ComputeError> {
        let partition = self.partition;
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(StateError::from)?;
        let progress = read_progress(&tx)?;
        let plan = plan(progress.last_applied_window, windows);
        let republish = if plan.republish_last {
            read_last_batch(&tx)?
        } else {
            None
        };
        if plan.fresh.is_empty() {
            tx.commit().map_err(StateError::from)?;
            return Ok(ComputeOutcome {
                duplicates: plan.duplicates,
                republish,
                batch: None,
                applied: Vec::new(),
                changes: 0,
                stats: ApplyStats::default(),
                progress,
            });
        }

        let first_window_id = plan.fresh.first().map(|w| w.id).unwrap_or_default();
        let window_id = plan.fresh.last().map(|w| w.id).unwrap_or_default();
        // One window is applied in place; a catch-up merge concatenates.
        let changes: Cow<'_, [ChangeEvent]> = match plan.fresh.as_slice() {
            [one] => Cow::Borrowed(&one.changes),
            many => Cow::Owned(
                many.iter()
                    .flat_map(|w| w.changes.iter().cloned())
                    .collect(),
            ),
        };

        let mut store = SqliteStore::new(&tx);
        let applied = catch_unwind(AssertUnwindSafe(|| {
            engine.apply_split(&mut store, &changes)
        }));
        let (rows, partials, stats) = match applied {
            Ok(Ok(applied)) => applied,
            Ok(Err(source)) => {
                if store.failed() {
                    return Err(ComputeError::State(StateError::DuringApply(Box::new(
                        source,
                    ))));
                }
                return Err(ComputeError::Engine {
                    first_window_id,
                    window_id,
                    source: Box::new(source),
                });
            }
            Err(panic) => {
                return Err(ComputeError::EnginePanic {
                    first_window_id,
                    window_id,
                    message: panic_text(panic.as_ref()),
                })
            }
        };
        let groups = progress.groups + store.groups_delta();

        let previous_max_commit = if changes.is_empty() {
            read_last_batch(&tx)?
                .map(|b| b.decode().map(|b| b.max_commit_ts_ms))
                .transpose()?
                .unwrap_or_default()
        } else {
            0
        };
        let mut batch = result_batch(
            partition,
            &plan.fresh,
            rows,
            computed_at_ms,
            previous_max_commit,
        );
        batch.partials = partials;
        let stored = StoredBatch::from_batch(&batch)?;
        write_meta(&tx, META_LAST_APPLIED, &(window_id as i64))?;
        write_meta(&tx, META_GROUPS, &groups)?;
        write_meta(&tx, META_LAST_RESULT, &stored.json)?;
        tx.commit().map_err(StateError::from)?;

        Ok(ComputeOutcome {
            duplicates: plan.duplicates,
            republish,
            applied: plan.fresh.iter().map(|w| w.id).collect(),
            changes: changes.len(),
            stats,
            batch: Some(stored),
            progress: Progress {
                last_applied_window: window_id,
                groups,
            },
        })
    }
}

fn read_meta<T: rusqlite::types::FromSql>(
    conn: &Connection,
    k: &str,
) -> Result<Option<T>, rusqlite::Error> {
    conn.prepare_cached("SELECT v FROM meta WHERE k = ?1")?
        .query_row(params![k], |r| r.get(0))
        .optional()
}

fn write_meta<T: rusqlite::ToSql>(
    conn: &Connection,
    k: &str,
    v: &T,
) -> Result<(), rusqlite::Error> {
    conn.prepare_cached(
        "INSERT INTO meta (k, v) VALUES (?1, ?2) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
    )?
    .execute(params![k, v])?;
    Ok(())
}

fn read_progress(conn: &Connection) -> Result<Progress, StateError> {
    let last: Option<i64> = read_meta(conn, META_LAST_APPLIED)?;
    let groups: Option<i64> = read_meta(conn, META_GROUPS)?;
    let groups = match groups {
        Some(g) => g,
        None => conn.query_row("SELECT COUNT(*) FROM groups", [], |r| r.get(0))?,
    };
    Ok(Progress {
        last_applied_window: last.unwrap_or(0).max(0) as WindowId,
        groups,
    })
}

fn read_last_batch(conn: &Connection) -> Result<Option<StoredBatch>, StateError> {
    read_meta::<Vec<u8>>(conn, META_LAST_RESULT)?
        .map(StoredBatch::from_json)
        .transpose()
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_string()
    }
}

mod held;
pub use held::{HeldIntake, HeldWindow, Hold, HoldStatus, NextHeld, SkipError};

#[cfg(test)]
mod tests;
