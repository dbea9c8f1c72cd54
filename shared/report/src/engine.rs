//! The incremental engine: folds weighted change rows into per-group state and
//! emits the new absolute row of every group that changed.
//!
//! One-table reports fold the event's images directly: the before image
//! retracts (weight −1), the after image adds (+1). Reports with joins keep
//! the current rows of every table they read (row state, in the
//! [`StateStore`]); a change of any of those rows recomputes the joined rows
//! of the fact rows it takes part in, before (−1) and after (+1) the change.

use crate::agg::{AggSpec, GroupState};
use crate::codec;
use crate::compile::{JoinKind, Plan};
use crate::datum::{collate_key, sql_eq, Datum};
use crate::error::EngineError;
use crate::eval::{ColRef, Ctx, Expr, LATE_BOUND};
use crate::multiset::ChunkSizes;
use crate::report::Report;
use crate::rollup::{self, Rollup};
use crate::set::ReportSet;
use crate::spill::{chunk_ids, At, ChunkIds};
use crate::store::{IndexEntry, RowIndex, StateStore};
use mdp_types::result::key_text;
use mdp_types::{ChangeEvent, Op, PartialDelta, ResultRow, Row, Value};
use rust_decimal::Decimal;
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

/// Counters of one [`Engine::apply_with_stats`] call. Anything but zero in
/// `missing_group_retractions`, `inconsistent_retractions`,
/// `malformed_events` or `row_mismatches` means the state and the changes
/// disagree (state lost, changes skipped or replayed) and the affected
/// groups need a recompute.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyStats {
    /// Change events given.
    pub changes: u64,
    /// Events of tables no report reads.
    pub changes_ignored: u64,
    /// Weighted rows folded into some group (after WHERE).
    pub rows_folded: u64,
    /// Column references that found no such column in a row image (read as NULL).
    pub missing_columns: u64,
    /// Retractions (before images) that found no group to retract from.
    pub missing_group_retractions: u64,
    /// Retractions of values a group's accumulators did not hold.
    pub inconsistent_retractions: u64,
    /// Events lacking the image (or, for tables of reports with joins, the
    /// primary key) their op requires.
    pub malformed_events: u64,
    /// `Reset` events processed.
    pub resets: u64,
    /// Groups loaded and folded.
    pub groups_touched: u64,
    /// Result rows returned.
    pub rows_emitted: u64,
    /// Changes applied to the row state of reports with joins.
    pub row_changes: u64,
    /// Row changes whose before image disagreed with the stored row: an
    /// update or delete of a row not stored or stored with other values, an
    /// insert of a row already stored. The stored row is what is retracted.
    pub row_mismatches: u64,
    /// Fact rows whose joined rows were recomputed (the cost of joins).
    pub fact_rows_rejoined: u64,
    /// Sub-aggregates of a rolled-up dimension moved between groups by a
    /// change of a dimension row (instead of re-joining its fact rows).
    pub subaggregates_moved: u64,
}

/// The outcome of [`Engine::apply_batch`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Applied {
    /// New absolute rows of the changed groups of reports keyed by merchant.
    pub rows: Vec<ResultRow>,
    /// Accumulator differences of the changed groups of reports not keyed
    /// by merchant.
    pub partials: Vec<PartialDelta>,
    pub stats: ApplyStats,
}

/// Merges a partial delta (from [`Engine::apply_batch`] of any partition)
/// into a group's global state of `report`; returns the new state, `None`
/// when the group has no rows left. Deltas of one group commute, so
/// partitions may be merged in any interleaving as long as each delta is
/// merged once.
pub fn merge_partial(
    report: &Report,
    state: Option<&[u8]>,
    delta: &PartialDelta,
) -> Result<Option<Vec<u8>>, EngineError> {
    let key_text = delta.key_text();
    let corrupt = |reason: String| EngineError::CorruptState {
        report: report.name.clone(),
        key: key_text.clone(),
        reason,
    };
    let d = decode_state(report, &key_text, Some(&delta.delta))?
        .ok_or_else(|| corrupt("empty delta".into()))?;
    let mut st = match decode_state(report, &key_text, state)? {
        Some(st) => st,
        None => GroupState::new(d.key.clone(), &report.plan.aggs),
    };
    st.merge(&d).map_err(corrupt)?;
    if !st.is_consistent() {
        return Err(corrupt(
            "merged state has negative counts (a delta was merged twice or lost)".into(),
        ));
    }
    if st.rows == 0 {
        return Ok(None);
    }
    Ok(Some(codec::encode(&st)))
}

/// The row of a group of a report not keyed by merchant from its global
/// state (as [`merge_partial`] returns it): `deleted = true` when the group
/// has no rows or fails HAVING.
pub fn partial_row(
    report: &Report,
    key: &[Value],
    state: Option<&[u8]>,
) -> Result<ResultRow, EngineError> {
    let st = decode_state(report, &key_text(key), state)?;
    Ok(match st.as_ref().and_then(|s| output(&report.plan, s)) {
        Some(o) => result_row(report, o.key, o.values, false),
        None => result_row(report, key.to_vec(), Vec::new(), true),
    })
}

/// Applies change windows to report state. Cheap to share: holds only the
/// compiled reports.
#[derive(Debug, Clone)]
pub struct Engine {
    reports: Arc<ReportSet>,
    /// Source table → indexes of the reports reading it.
    by_table: HashMap<String, Vec<usize>>,
    /// Table → what is kept of its rows (the tables of reports with joins).
    row_tables: BTreeMap<String, RowTable>,
    /// Per report: the dimension it rolls up, if any (see [`crate::rollup`]).
    rollups: Vec<Option<Rollup>>,
    /// When multisets are stored in chunks (see [`crate::multiset`]).
    chunk_sizes: ChunkSizes,
}

/// What the row state keeps of one table.
#[derive(Debug, Clone, Default)]
struct RowTable {
    /// Lower-case names of the columns kept: those reports with joins read.
    columns: BTreeSet<String>,
    /// Lower-case names of the columns rows are indexed on.
    indexes: BTreeSet<String>,
}

/// A group's visible row.
#[derive(Debug, Clone, PartialEq)]
struct Output {
    key: Vec<Value>,
    values: Vec<Value>,
}

/// A group read during one apply call.
struct Touched {
    /// The stored bytes as loaded (writes are skipped when unchanged).
    loaded: Option<Vec<u8>>,
    /// The multiset chunks the stored state refers to.
    chunks: ChunkIds,
    /// The group's visible row before this call.
    old: Option<Output>,
    /// The current state; `None` once the group has no rows.
    state: Option<GroupState>,
}

/// A sub-aggregate of a rolled-up dimension read during one apply call.
struct SubTouched {
    /// The stored bytes as loaded (writes are skipped when unchanged).
    loaded: Option<Vec<u8>>,
    /// The multiset chunks the stored state refers to.
    chunks: ChunkIds,
    /// The current state; `None` once it has no rows.
    state: Option<GroupState>,
}

/// One joined row: a row, or `None` (NULL-extended), per relation.
type Tuple = Vec<Option<Arc<Row>>>;

/// (report index, index of a table's relation in the report).
type Reader = (usize, usize);

/// Per fact row (primary key), its joined rows before a change.
type Rejoin = Vec<(String, Vec<Tuple>)>;

/// A sub-aggregate of a rolled-up dimension with the keys of the groups it
/// counts in.
type Labelled = (GroupState, Vec<Vec<Datum>>);

/// Everything one apply call works on.
struct Run<'s, S> {
    store: &'s mut S,
    /// Per report: the groups read so far.
    touched: Vec<BTreeMap<String, Touched>>,
    /// Per report: the sub-aggregates of its rolled-up dimension read so far.
    subs: Vec<BTreeMap<String, SubTouched>>,
    /// Stored rows read or written so far (`None`: known absent).
    rows: HashMap<(String, String), Option<Arc<Row>>>,
    /// Index lookups done so far, kept current by the writes.
    lookups: HashMap<(String, String, String), Vec<String>>,
    stats: ApplyStats,
    missing: Cell<u64>,
}

/// Column lookups over the current row of each relation.
struct RowCtx<'a> {
    rels: &'a [Option<&'a Row>],
    missing: &'a Cell<u64>,
}

fn find_column<'r>(row: &'r Row, name: &str) -> Option<&'r Value> {
    row.get(name).or_else(|| {
        row.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    })
}

impl Ctx for RowCtx<'_> {
    fn column(&self, c: &ColRef) -> Datum {
        if c.rel == LATE_BOUND {
            // The relation whose row has the column; a NULL-extended
            // relation may be the one, so absence is missing only when every
            // relation has a row.
            if let Some(v) = self
                .rels
                .iter()
                .flatten()
                .find_map(|r| find_column(r, &c.name))
            {
                return Datum::from_value(v);
            }
            if self.rels.iter().all(Option::is_some) {
                self.missing.set(self.missing.get() + 1);
            }
            return Datum::Null;
        }
        let Some(Some(row)) = self.rels.get(c.rel) else {
            return Datum::Null;
        };
        match find_column(row, &c.name) {
            Some(v) => Datum::from_value(v),
            None => {
                self.missing.set(self.missing.get() + 1);
                Datum::Null
            }
        }
    }

    fn key(&self, _: usize) -> Datum {
        Datum::Null
    }

    fn agg(&self, _: usize) -> Datum {
        Datum::Null
    }
}

/// Group keys and aggregate results of one group.
struct GroupCtx<'a> {
    keys: &'a [Datum],
    aggs: &'a [Datum],
}

impl Ctx for GroupCtx<'_> {
    fn column(&self, _: &ColRef) -> Datum {
        Datum::Null
    }

    fn key(&self, i: usize) -> Datum {
        self.keys.get(i).cloned().unwrap_or(Datum::Null)
    }

    fn agg(&self, j: usize) -> Datum {
        self.aggs.get(j).cloned().unwrap_or(Datum::Null)
    }
}

pub(crate) fn store_err<E: std::error::Error + Send + Sync + 'static>(
    operation: &'static str,
) -> impl FnOnce(E) -> EngineError {
    move |e| EngineError::Store {
        operation,
        source: Box::new(e),
    }
}

/// The text under which a join column's value is indexed: values equal under
/// SQL `=` (of one type family) get the same text; NULL is never equal to
/// anything and is not indexed. Numbers by exact value (`5`, `5.00` and
/// `5e0` are one key), strings under the default collation, temporals by
/// time (a DATE equals the DATETIME at its midnight).
fn join_key(v: &Value) -> Option<String> {
    let number = |d: Decimal| format!("n:{}", d.normalize());
    Some(match v {
        Value::Null => return None,
        Value::I(i) => number(Decimal::from(*i)),
        Value::U(u) => number(Decimal::from(*u)),
        Value::D(d) => number(*d),
        Value::F(f) => match Decimal::try_from(*f) {
            Ok(d) if f.is_finite() && d.to_string().parse::<f64>() == Ok(*f) => number(d),
            _ => format!("f:{f:e}"),
        },
        Value::S(s) => format!("s:{}", collate_key(s)),
        Value::B(b) => format!("b:{}", String::from_utf8_lossy(b)),
        Value::Date(d) => format!("t:{}", d.and_hms_opt(0, 0, 0).unwrap_or_default()),
        Value::Dt(dt) => format!("t:{dt}"),
        Value::Time(t) => format!("h:{t}"),
    })
}

/// Strict equality of two values as the engine reads them (decimal scales
/// included, unlike `Value`'s own equality).
fn same_value(a: &Value, b: &Value) -> bool {
    Datum::from_value(a) == Datum::from_value(b)
}

fn same_row(a: &Row, b: &Row) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|((ka, va), (kb, vb))| ka == kb && same_value(va, vb))
}

fn same_tuples(a: &[Tuple], b: &[Tuple]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(p, q)| match (p, q) {
                    (None, None) => true,
                    (Some(p), Some(q)) => Arc::ptr_eq(p, q) || same_row(p, q),
                    _ => false,
                })
        })
}

impl RowTable {
    /// The part of a row image the state keeps: the columns reports read,
    /// names in lower case, values as the engine reads them.
    fn project(&self, row: &Row) -> Row {
        row.iter()
            .filter_map(|(k, v)| {
                let lc = k.to_lowercase();
                self.columns
                    .contains(&lc)
                    .then(|| (lc, Datum::from_value(v).to_value()))
            })
            .collect()
    }

    fn index_entries(&self, row: Option<&Row>) -> Vec<IndexEntry> {
        let Some(row) = row else {
            return Vec::new();
        };
        self.indexes
            .iter()
            .filter_map(|c| {
                row.get(c).and_then(join_key).map(|value| IndexEntry {
                    column: c.clone(),
                    value,
                })
            })
            .collect()
    }
}

impl<S: StateStore> Run<'_, S> {
    /// The stored row `pk` of `table`.
    fn row(&mut self, table: &str, pk: &str) -> Result<Option<Arc<Row>>, EngineError> {
        let k = (table.to_string(), pk.to_string());
        if let Some(r) = self.rows.get(&k) {
            return Ok(r.clone());
        }
        let bytes = self
            .store
            .load_row(table, pk)
            .map_err(store_err("load_row"))?;
        let row = match bytes {
            None => None,
            Some(b) => Some(Arc::new(codec::decode_row(&b).map_err(|reason| {
                EngineError::CorruptRow {
                    table: table.to_string(),
                    pk: pk.to_string(),
                    reason,
                }
            })?)),
        };
        self.rows.insert(k, row.clone());
        Ok(row)
    }

    /// Primary keys of the rows of `table` whose `column` has join key `value`.
    fn lookup(
        &mut self,
        table: &str,
        column: &str,
        value: &str,
    ) -> Result<Vec<String>, EngineError> {
        let k = (table.to_string(), column.to_string(), value.to_string());
        if let Some(pks) = self.lookups.get(&k) {
            return Ok(pks.clone());
        }
        let pks = self
            .store
            .lookup_rows(table, column, value)
            .map_err(store_err("lookup_rows"))?;
        self.lookups.insert(k, pks.clone());
        Ok(pks)
    }

    /// Replaces (or deletes) a stored row, its index entries and what this
    /// call has cached of both.
    fn write_row(
        &mut self,
        spec: &RowTable,
        table: &str,
        pk: &str,
        new: Option<Row>,
    ) -> Result<(), EngineError> {
        let old = self.row(table, pk)?;
        let stored = old.as_deref().map(|o| spec.index_entries(Some(o)));
        let old_entries = stored.as_deref().unwrap_or_default();
        let new_entries = spec.index_entries(new.as_ref());
        let bytes = new.as_ref().map(codec::encode_row);
        self.store
            .replace_row(
                table,
                pk,
                stored.as_deref(),
                bytes.as_deref().map(|b| (b, new_entries.as_slice())),
            )
            .map_err(store_err("replace_row"))?;
        for e in old_entries {
            let k = (table.to_string(), e.column.clone(), e.value.clone());
            if let Some(pks) = self.lookups.get_mut(&k) {
                pks.retain(|p| p != pk);
            }
        }
        for e in &new_entries {
            let k = (table.to_string(), e.column.clone(), e.value.clone());
            if let Some(pks) = self.lookups.get_mut(&k) {
                if let Err(i) = pks.binary_search_by(|p| p.as_str().cmp(pk)) {
                    pks.insert(i, pk.to_string());
                }
            }
        }
        self.rows
            .insert((table.to_string(), pk.to_string()), new.map(Arc::new));
        self.stats.row_changes += 1;
        Ok(())
    }
}

impl Engine {
    pub fn new(reports: Arc<ReportSet>) -> Self {
        let mut by_table: HashMap<String, Vec<usize>> = HashMap::new();
        let mut row_tables: BTreeMap<String, RowTable> = BTreeMap::new();
        for (i, r) in reports.reports().iter().enumerate() {
            for t in &r.tables {
                let ids = by_table.entry(t.clone()).or_default();
                if !ids.contains(&i) {
                    ids.push(i);
                }
            }
            if r.has_joins() {
                collect_row_needs(&r.plan, &mut row_tables);
            }
        }
        let rollups = reports
            .reports()
            .iter()
            .map(|r| {
                if r.has_joins() {
                    rollup::choose(&r.name, &r.plan)
                } else {
                    None
                }
            })
            .collect();
        Engine {
            reports,
            by_table,
            row_tables,
            rollups,
            chunk_sizes: ChunkSizes::default(),
        }
    }

    /// The same engine with other sizes for multisets stored in chunks.
    /// States written with other sizes stay readable; they adopt the new
    /// sizes as their chunks are rewritten.
    pub fn with_chunk_sizes(mut self, sizes: ChunkSizes) -> Self {
        self.chunk_sizes = sizes.checked();
        self
    }

    /// The group (`ns`, `key`) for reading and writing multiset chunks.
    fn at<'a>(&'a self, ns: &'a str, key: &'a str) -> At<'a> {
        At {
            ns,
            key,
            sizes: &self.chunk_sizes,
        }
    }

    /// The reports this engine maintains.
    pub fn reports(&self) -> &Arc<ReportSet> {
        &self.reports
    }

    /// The tables whose current rows the engine keeps in the store (every
    /// table a report with joins reads).
    pub fn row_tables(&self) -> BTreeSet<String> {
        self.row_tables.keys().cloned().collect()
    }

    /// The secondary indexes the engine looks stored rows up with.
    pub fn required_indexes(&self) -> BTreeSet<RowIndex> {
        self.row_tables
            .iter()
            .flat_map(|(t, spec)| {
                spec.indexes.iter().map(|c| RowIndex {
                    table: t.clone(),
                    column: c.clone(),
                })
            })
            .collect()
    }

    /// The table report `report` rolls up, if any: changes of its rows move
    /// the report's sub-aggregates between groups instead of re-joining fact
    /// rows (`docs/reports.md`, "Cost of joins").
    pub fn rolled_up(&self, report: &str) -> Option<&str> {
        let i = self
            .reports
            .reports()
            .iter()
            .position(|r| r.name == report)?;
        let ru = self.rollups.get(i)?.as_ref()?;
        Some(&self.reports.reports()[i].plan.relations[ru.rel].table)
    }

    /// The columns of `table` the row state keeps (lower case), if the
    /// engine keeps rows of `table`.
    pub fn row_columns(&self, table: &str) -> Option<&BTreeSet<String>> {
        self.row_tables.get(table).map(|t| &t.columns)
    }

    /// Applies the changes (one or several windows of ONE partition, in order)
    /// to the state and returns every changed group's new absolute row
    /// (`deleted = true` when the group's row count is 0 or it fails HAVING).
    pub fn apply<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<Vec<ResultRow>, EngineError> {
        self.apply_with_stats(store, changes).map(|(rows, _)| rows)
    }

    /// [`Engine::apply`] that also returns the counters of the call. Rows are
    /// ordered by report name, then key text. For reports not keyed by
    /// merchant the rows are those of the groups as this store holds them:
    /// exact when the store sees every partition's changes; a partitioned
    /// pipeline uses [`Engine::apply_batch`] instead. Each touched group is loaded
    /// once and stored once (only if its state changed).
    pub fn apply_with_stats<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<(Vec<ResultRow>, ApplyStats), EngineError> {
        self.run(store, changes, false)
            .map(|applied| (applied.rows, applied.stats))
    }

    /// Applies the changes of ONE partition as [`Engine::apply_with_stats`]
    /// does, except for reports not keyed by merchant (a group gathers rows
    /// of every partition): for those, the store holds this partition's
    /// share of each group and, instead of rows, the call returns each
    /// changed group's accumulator difference ([`PartialDelta`]). Merging
    /// the deltas of every partition with [`merge_partial`] and reading the
    /// merged state with [`partial_row`] gives the exact rows.
    pub fn apply_batch<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
    ) -> Result<Applied, EngineError> {
        self.run(store, changes, true)
    }

    fn run<S: StateStore>(
        &self,
        store: &mut S,
        changes: &[ChangeEvent],
        split: bool,
    ) -> Result<Applied, EngineError> {
        let reports = self.reports.reports();
        let mut run = Run {
            store,
            touched: (0..reports.len()).map(|_| BTreeMap::new()).collect(),
            subs: (0..reports.len()).map(|_| BTreeMap::new()).collect(),
            rows: HashMap::new(),
            lookups: HashMap::new(),
            stats: ApplyStats::default(),
            missing: Cell::new(0),
        };
        for ev in changes {
            run.stats.changes += 1;
            // (report, relation of the event's table in it)
            let readers: Vec<Reader> = self
                .by_table
                .get(&ev.table)
                .map(|ids| {
                    ids.iter()
                        .filter_map(|&i| {
                            reports[i]
                                .plan
                                .relations
                                .iter()
                                .position(|r| {
                                    r.table == ev.table
                                        && r.schema.as_ref().is_none_or(|s| *s == ev.source)
                                })
                                .map(|rel| (i, rel))
                        })
                        .collect()
                })
                .unwrap_or_default();
            if readers.is_empty() {
                run.stats.changes_ignored += 1;
                continue;
            }
            let (joined, single): (Vec<Reader>, Vec<Reader>) = readers
                .into_iter()
                .partition(|&(i, _)| reports[i].has_joins());
            if ev.op == Op::Reset {
                run.stats.resets += 1;
                for &(r, _) in &single {
                    self.reset(r, &mut run)?;
                }
                if !joined.is_empty() {
                    self.reset_rows(&mut run, &joined, &ev.table)?;
                }
                continue;
            }
            let images: Vec<(&Row, i64)> = match ev.op {
                Op::Reset => Vec::new(),
                Op::Insert | Op::Snapshot => ev.after.iter().map(|a| (a, 1)).collect(),
                Op::Delete => ev.before.iter().map(|b| (b, -1)).collect(),
                Op::Update => ev
                    .before
                    .iter()
                    .map(|b| (b, -1))
                    .chain(ev.after.iter().map(|a| (a, 1)))
                    .collect(),
            };
            let expected = if ev.op == Op::Update { 2 } else { 1 };
            let needs_after = ev.op != Op::Delete;
            let join_malformed =
                !joined.is_empty() && (ev.pk.is_empty() || (needs_after && ev.after.is_none()));
            if (!single.is_empty() && images.len() != expected) || join_malformed {
                run.stats.malformed_events += 1;
                tracing::debug!(event = %ev.id, table = %ev.table, op = ?ev.op, "change event lacks a row image or its primary key");
            }
            for &(r, _) in &single {
                for &(row, w) in &images {
                    self.fold(r, &mut run, &[Some(row)], w)?;
                }
            }
            if !joined.is_empty() && !join_malformed {
                self.change_row(
                    &mut run,
                    &joined,
                    &ev.table,
                    &key_text(&ev.pk),
                    ev.before.as_ref(),
                    ev.after.as_ref().filter(|_| needs_after),
                    Some(ev.op),
                )?;
            }
        }
        let Run {
            store,
            touched,
            subs,
            mut stats,
            missing,
            ..
        } = run;
        stats.missing_columns = missing.get();

        for (ru, subs) in self.rollups.iter().zip(subs) {
            let Some(ru) = ru else { continue };
            for (key, mut t) in subs {
                self.at(&ru.namespace, &key).write_group(
                    store,
                    t.loaded.as_deref(),
                    &t.chunks,
                    t.state.as_mut(),
                )?;
            }
        }

        let mut out = Vec::new();
        let mut partials = Vec::new();
        for (r, groups) in touched.into_iter().enumerate() {
            let report = &reports[r];
            let plan = &report.plan;
            let partial = split && plan.tenant_key.is_none();
            for (key_text, mut t) in groups {
                let at = self.at(&report.name, &key_text);
                if let Some(st) = t.state.as_mut() {
                    at.load_extremes(store, st, &plan.aggs)?;
                }
                if partial {
                    let delta = self.partial_delta(store, report, &key_text, &t)?;
                    at.write_group(store, t.loaded.as_deref(), &t.chunks, t.state.as_mut())?;
                    if let Some(delta) = delta {
                        partials.push(delta);
                    }
                    continue;
                }
                let new = t.state.as_ref().and_then(|s| output(plan, s));
                at.write_group(store, t.loaded.as_deref(), &t.chunks, t.state.as_mut())?;
                let row = match (t.old, new) {
                    (None, None) => None,
                    (Some(old), None) => Some((old.key, Vec::new(), true)),
                    (old, Some(new)) => {
                        if old.as_ref() == Some(&new) {
                            None
                        } else {
                            Some((new.key, new.values, false))
                        }
                    }
                };
                if let Some((key, values, deleted)) = row {
                    out.push(result_row(report, key, values, deleted));
                }
            }
        }
        stats.rows_emitted = out.len() as u64;
        if stats.missing_group_retractions > 0
            || stats.inconsistent_retractions > 0
            || stats.malformed_events > 0
            || stats.row_mismatches > 0
        {
            tracing::debug!(
                missing_group_retractions = stats.missing_group_retractions,
                inconsistent_retractions = stats.inconsistent_retractions,
                malformed_events = stats.malformed_events,
                row_mismatches = stats.row_mismatches,
                "report state and changes disagree; affected groups need a recompute"
            );
        }
        Ok(Applied {
            rows: out,
            partials,
            stats,
        })
    }

    /// The accumulator difference of a group of a report not keyed by
    /// merchant over this call (`None`: no change), before its state is
    /// written.
    fn partial_delta<S: StateStore>(
        &self,
        store: &mut S,
        report: &Report,
        key_text: &str,
        t: &Touched,
    ) -> Result<Option<PartialDelta>, EngineError> {
        let plan = &report.plan;
        let old = match decode_state(report, key_text, t.loaded.as_deref())? {
            Some(old) => Some(self.at(&report.name, key_text).old_for_delta(
                store,
                old,
                t.state.as_ref(),
            )?),
            None => None,
        };
        let Some(key) = t.state.as_ref().or(old.as_ref()).map(|s| s.key.clone()) else {
            return Ok(None);
        };
        let delta = GroupState::delta(&key, &plan.aggs, old.as_ref(), t.state.as_ref()).map_err(
            |reason| EngineError::CorruptState {
                report: report.name.clone(),
                key: key_text.to_string(),
                reason,
            },
        )?;
        if delta.is_zero() {
            return Ok(None);
        }
        Ok(Some(PartialDelta {
            report: report.name.clone(),
            key: key.iter().map(Datum::to_value).collect(),
            delta: codec::encode(&delta),
        }))
    }

    /// Loads a group into `touched` (once per call).
    fn touch<'t, S: StateStore>(
        &self,
        report: &Report,
        store: &mut S,
        touched: &'t mut BTreeMap<String, Touched>,
        key_text: String,
        stats: &mut ApplyStats,
    ) -> Result<&'t mut Touched, EngineError> {
        use std::collections::btree_map::Entry;
        match touched.entry(key_text) {
            Entry::Occupied(o) => Ok(o.into_mut()),
            Entry::Vacant(v) => {
                let loaded = store
                    .load_group(&report.name, v.key())
                    .map_err(store_err("load_group"))?;
                let mut state = decode_state(report, v.key(), loaded.as_deref())?;
                let chunks = state.as_ref().map(chunk_ids).unwrap_or_default();
                if let Some(st) = state.as_mut() {
                    self.at(&report.name, v.key())
                        .load_extremes(store, st, &report.plan.aggs)?;
                }
                let old = state.as_ref().and_then(|s| output(&report.plan, s));
                stats.groups_touched += 1;
                Ok(v.insert(Touched {
                    loaded,
                    chunks,
                    old,
                    state,
                }))
            }
        }
    }

    /// Folds one (joined) row of report `r` with weight `w`.
    fn fold<S: StateStore>(
        &self,
        r: usize,
        run: &mut Run<'_, S>,
        rels: &[Option<&Row>],
        w: i64,
    ) -> Result<(), EngineError> {
        let report = &self.reports.reports()[r];
        let plan = &report.plan;
        let cx = RowCtx {
            rels,
            missing: &run.missing,
        };
        if let Some(f) = &plan.filter {
            if f.eval(&cx).truth() != Some(true) {
                return Ok(());
            }
        }
        let key: Vec<Datum> = plan
            .group_exprs
            .iter()
            .map(|g| g.eval(&cx).normalized())
            .collect();
        let key_values: Vec<Value> = key.iter().map(Datum::to_value).collect();
        let text = key_text(&key_values);
        let args: Vec<Datum> = plan
            .aggs
            .iter()
            .map(|spec| spec.arg.as_ref().map_or(Datum::Null, |a| a.eval(&cx)))
            .collect();
        let stats = &mut run.stats;
        let t = self.touch(report, run.store, &mut run.touched[r], text.clone(), stats)?;
        if let Some(st) = t.state.as_mut() {
            self.at(&report.name, &text)
                .load_for_values(run.store, st, &plan.aggs, &args)?;
        }
        fold_values(&mut t.state, key, &plan.aggs, &args, w, stats);
        Ok(())
    }

    /// Drops every group of one-table report `r` (its table is being
    /// re-snapshotted).
    fn reset<S: StateStore>(&self, r: usize, run: &mut Run<'_, S>) -> Result<(), EngineError> {
        let report = &self.reports.reports()[r];
        let all = run
            .store
            .groups_of(&report.name)
            .map_err(store_err("groups_of"))?;
        let touched = &mut run.touched[r];
        for (key_text, bytes) in all {
            if touched.contains_key(&key_text) {
                continue;
            }
            let mut state = decode_state(report, &key_text, Some(&bytes))?;
            let chunks = state.as_ref().map(chunk_ids).unwrap_or_default();
            if let Some(st) = state.as_mut() {
                self.at(&report.name, &key_text)
                    .load_extremes(run.store, st, &report.plan.aggs)?;
            }
            let old = state.as_ref().and_then(|s| output(&report.plan, s));
            run.stats.groups_touched += 1;
            touched.insert(
                key_text,
                Touched {
                    loaded: Some(bytes),
                    chunks,
                    old,
                    state: None,
                },
            );
        }
        for t in touched.values_mut() {
            t.state = None;
        }
        Ok(())
    }

    /// Forgets every stored row of `table` as if each was deleted: what the
    /// rows contributed to reports with joins is retracted.
    fn reset_rows<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        joined: &[Reader],
        table: &str,
    ) -> Result<(), EngineError> {
        let all = run.store.rows_of(table).map_err(store_err("rows_of"))?;
        for (pk, _) in all {
            self.change_row(run, joined, table, &pk, None, None, None)?;
        }
        Ok(())
    }

    /// Applies one row change to the row state and to reports with joins
    /// `joined` (report, relation of `table`): the joined rows of every fact
    /// row the stored or the new image takes part in are retracted as they
    /// were and added as they are after the change. `check` is the event's
    /// op, to compare its images with the stored row.
    #[allow(clippy::too_many_arguments)]
    fn change_row<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        joined: &[Reader],
        table: &str,
        pk: &str,
        before: Option<&Row>,
        after: Option<&Row>,
        check: Option<Op>,
    ) -> Result<(), EngineError> {
        let Some(spec) = self.row_tables.get(table) else {
            return Ok(());
        };
        let reports = self.reports.reports();
        let stored = run.row(table, pk)?;
        let new = after.map(|r| spec.project(r));
        if let Some(op) = check {
            let agrees = match op {
                Op::Insert => stored.is_none(),
                Op::Snapshot => match (&stored, &new) {
                    (Some(s), Some(n)) => same_row(s, n),
                    _ => true,
                },
                Op::Update | Op::Delete => match (&stored, before) {
                    (Some(s), Some(b)) => same_row(s, &spec.project(b)),
                    _ => false,
                },
                Op::Reset => true,
            };
            if !agrees {
                run.stats.row_mismatches += 1;
                tracing::debug!(table, pk, op = ?op, stored = stored.is_some(), "change disagrees with the stored row");
            }
        }
        match (&stored, &new) {
            (None, None) => return Ok(()),
            (Some(s), Some(n)) if same_row(s, n) => return Ok(()),
            _ => {}
        }
        // Fact rows whose joined rows may change, with those rows now
        // (without the rolled-up relation, if the report has one).
        let mut work: Vec<(usize, Rejoin)> = Vec::with_capacity(joined.len());
        // Sub-aggregates a change of a rolled-up dimension row may move,
        // with the groups they count in now.
        let mut moves: Vec<(usize, Vec<Labelled>)> = Vec::new();
        for &(r, rel) in joined {
            let plan = &reports[r].plan;
            let rollup = self.rollups[r].as_ref();
            if let Some(ru) = rollup.filter(|ru| ru.rel == rel) {
                let prefixes: BTreeSet<String> = [stored.as_deref(), new.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|image| dimension_prefix(ru, image))
                    .collect();
                let mut subs = Vec::new();
                for prefix in prefixes {
                    for st in self.subs_with_prefix(run, r, ru, &prefix)? {
                        let labels = self.labels(run, plan, ru, &st)?;
                        subs.push((st, labels));
                    }
                }
                moves.push((r, subs));
                continue;
            }
            let skip = rollup.map(|ru| ru.rel);
            let mut facts = BTreeSet::new();
            if rel == 0 {
                facts.insert(pk.to_string());
            } else {
                for image in [stored.as_deref(), new.as_ref()].into_iter().flatten() {
                    self.facts_joining(run, plan, rel, image, &mut facts)?;
                }
            }
            let mut before = Vec::with_capacity(facts.len());
            for f in facts {
                let tuples = self.tuples_of(run, plan, &f, skip)?;
                before.push((f, tuples));
            }
            work.push((r, before));
        }
        run.write_row(spec, table, pk, new)?;
        for (r, subs) in moves {
            let Some(ru) = self.rollups[r].as_ref() else {
                continue;
            };
            let plan = &reports[r].plan;
            for (st, before) in subs {
                let after = self.labels(run, plan, ru, &st)?;
                if before == after {
                    continue;
                }
                run.stats.subaggregates_moved += 1;
                for (labels, sign) in [(before, -1), (after, 1)] {
                    for key in labels {
                        self.fold_state(r, run, key, &st, sign)?;
                    }
                }
            }
        }
        for (r, facts) in work {
            let plan = &reports[r].plan;
            let rollup = self.rollups[r].as_ref();
            for (f, before) in facts {
                run.stats.fact_rows_rejoined += 1;
                let after = self.tuples_of(run, plan, &f, rollup.map(|ru| ru.rel))?;
                if same_tuples(&before, &after) {
                    continue;
                }
                for (tuples, w) in [(&before, -1), (&after, 1)] {
                    for t in tuples {
                        let Some(ru) = rollup else {
                            let rels: Vec<Option<&Row>> = t.iter().map(|x| x.as_deref()).collect();
                            self.fold(r, run, &rels, w)?;
                            continue;
                        };
                        self.fold_sub(r, ru, run, t, w)?;
                        for full in self.dimension_rows(run, plan, ru, &dimension_key(ru, t))? {
                            let mut rels: Vec<Option<&Row>> =
                                t.iter().map(|x| x.as_deref()).collect();
                            rels[ru.rel] = full.as_deref();
                            self.fold(r, run, &rels, w)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Folds a joined row without the rolled-up relation (`t`, weight `w`)
    /// into its sub-aggregate of report `r`: the rows passing the WHERE
    /// terms that do not read the dimension, per (join key, GROUP BY values
    /// not from the dimension). Rows whose join key has a NULL match no
    /// dimension row ever and are not kept.
    fn fold_sub<S: StateStore>(
        &self,
        r: usize,
        ru: &Rollup,
        run: &mut Run<'_, S>,
        t: &Tuple,
        w: i64,
    ) -> Result<(), EngineError> {
        let report = &self.reports.reports()[r];
        let plan = &report.plan;
        let rels: Vec<Option<&Row>> = t.iter().map(|x| x.as_deref()).collect();
        let cx = RowCtx {
            rels: &rels,
            missing: &run.missing,
        };
        if !ru
            .base_filter
            .iter()
            .all(|f| f.eval(&cx).truth() == Some(true))
        {
            return Ok(());
        }
        let mut key = dimension_key(ru, t);
        let Some(prefix) = key_prefix(&key) else {
            return Ok(());
        };
        let base: Vec<Datum> = ru
            .base_keys
            .iter()
            .map(|&i| plan.group_exprs[i].eval(&cx).normalized())
            .collect();
        let text = format!(
            "{prefix}{}",
            key_text(&base.iter().map(Datum::to_value).collect::<Vec<_>>())
        );
        let args: Vec<Datum> = plan
            .aggs
            .iter()
            .map(|spec| spec.arg.as_ref().map_or(Datum::Null, |a| a.eval(&cx)))
            .collect();
        use std::collections::btree_map::Entry;
        let at = self.at(&ru.namespace, &text);
        let sub = match run.subs[r].entry(text.clone()) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let loaded = run
                    .store
                    .load_group(&ru.namespace, v.key())
                    .map_err(store_err("load_group"))?;
                let state = match &loaded {
                    Some(bytes) => Some(decode_sub(report, ru, v.key(), bytes)?),
                    None => None,
                };
                let chunks = state.as_ref().map(chunk_ids).unwrap_or_default();
                v.insert(SubTouched {
                    loaded,
                    chunks,
                    state,
                })
            }
        };
        if let Some(st) = sub.state.as_mut() {
            at.load_for_values(run.store, st, &plan.aggs, &args)?;
        }
        key.extend(base);
        fold_values(&mut sub.state, key, &plan.aggs, &args, w, &mut run.stats);
        Ok(())
    }

    /// The current sub-aggregates of report `r` under one join key (key
    /// prefix): stored ones, as changed so far in this call.
    fn subs_with_prefix<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        r: usize,
        ru: &Rollup,
        prefix: &str,
    ) -> Result<Vec<GroupState>, EngineError> {
        let report = &self.reports.reports()[r];
        let stored = run
            .store
            .groups_with_prefix(&ru.namespace, prefix)
            .map_err(store_err("groups_with_prefix"))?;
        // Whole: a moved sub-aggregate is added and subtracted entire.
        let mut out = BTreeMap::new();
        for (key, bytes) in stored {
            if !run.subs[r].contains_key(&key) {
                let mut st = decode_sub(report, ru, &key, &bytes)?;
                self.at(&ru.namespace, &key).load_all(run.store, &mut st)?;
                out.insert(key, st);
            }
        }
        let touched = run.subs[r]
            .range_mut::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix));
        for (key, t) in touched {
            if let Some(st) = &mut t.state {
                self.at(&ru.namespace, key).load_all(run.store, st)?;
                out.insert(key.clone(), st.clone());
            }
        }
        Ok(out.into_values().collect())
    }

    /// The rows of the rolled-up relation joining join key `key` (fact-side
    /// values of its ON equalities, in order); `[None]` (NULL-extended) when
    /// none does and the join is a LEFT join.
    fn dimension_rows<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        plan: &Plan,
        ru: &Rollup,
        key: &[Datum],
    ) -> Result<Vec<Option<Arc<Row>>>, EngineError> {
        let table = &plan.relations[ru.rel].table;
        let (column, _) = &ru.on[ru.probe];
        let mut out = Vec::new();
        let probe = key.get(ru.probe).map(Datum::to_value);
        if let Some(value) = probe.as_ref().and_then(join_key) {
            for pk in run.lookup(table, column, &value)? {
                let Some(row) = run.row(table, &pk)? else {
                    continue;
                };
                let all_equal = ru.on.iter().zip(key).all(|((mine, _), k)| {
                    row.get(mine)
                        .is_some_and(|a| sql_eq(&Datum::from_value(a), k) == Some(true))
                });
                if all_equal {
                    out.push(Some(row));
                }
            }
        }
        if out.is_empty() && ru.kind == JoinKind::Left {
            out.push(None);
        }
        Ok(out)
    }

    /// The keys of the groups sub-aggregate `st` counts in: one per
    /// dimension row of its join key that passes the dimension's WHERE
    /// terms, with that row's GROUP BY values.
    fn labels<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        plan: &Plan,
        ru: &Rollup,
        st: &GroupState,
    ) -> Result<Vec<Vec<Datum>>, EngineError> {
        let n = ru.on.len();
        let (key, base) = st.key.split_at(n.min(st.key.len()));
        let mut out = Vec::new();
        for row in self.dimension_rows(run, plan, ru, key)? {
            let mut rels: Vec<Option<&Row>> = vec![None; plan.relations.len()];
            rels[ru.rel] = row.as_deref();
            let cx = RowCtx {
                rels: &rels,
                missing: &run.missing,
            };
            if !ru
                .dim_filter
                .iter()
                .all(|f| f.eval(&cx).truth() == Some(true))
            {
                continue;
            }
            let mut base = base.iter();
            let labels = plan
                .group_exprs
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    if ru.base_keys.contains(&i) {
                        base.next().cloned().unwrap_or(Datum::Null)
                    } else {
                        g.eval(&cx).normalized()
                    }
                })
                .collect();
            out.push(labels);
        }
        Ok(out)
    }

    /// Adds (`sign` = 1) or subtracts (−1) a whole sub-aggregate to or from
    /// the group `key` of report `r`.
    fn fold_state<S: StateStore>(
        &self,
        r: usize,
        run: &mut Run<'_, S>,
        key: Vec<Datum>,
        st: &GroupState,
        sign: i64,
    ) -> Result<(), EngineError> {
        let report = &self.reports.reports()[r];
        let text = key_text(&key.iter().map(Datum::to_value).collect::<Vec<_>>());
        let stats = &mut run.stats;
        let t = self.touch(report, run.store, &mut run.touched[r], text.clone(), stats)?;
        if sign < 0 && t.state.is_none() {
            stats.missing_group_retractions += 1;
            return Ok(());
        }
        if let Some(g) = t.state.as_mut() {
            self.at(&report.name, &text)
                .load_for_state(run.store, g, st)?;
        }
        let g = t
            .state
            .get_or_insert_with(|| GroupState::new(key, &report.plan.aggs));
        g.absorb(st, sign)
            .map_err(|reason| EngineError::CorruptState {
                report: report.name.clone(),
                key: text,
                reason,
            })?;
        stats.rows_folded += 1;
        if !g.is_consistent() {
            stats.inconsistent_retractions += 1;
        }
        if g.rows <= 0 {
            if g.accs.iter().any(|a| !a.is_empty()) {
                stats.inconsistent_retractions += 1;
            }
            t.state = None;
        }
        Ok(())
    }

    /// Adds to `out` the primary keys of the fact rows that `row`, as a row
    /// of relation `rel`, can join: back through each join's probe
    /// equality, using the stored rows of the relations in between.
    fn facts_joining<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        plan: &Plan,
        rel: usize,
        row: &Row,
        out: &mut BTreeSet<String>,
    ) -> Result<(), EngineError> {
        let Some(join) = plan.joins.iter().find(|j| j.rel == rel) else {
            return Ok(());
        };
        let (column, parent) = &join.on[join.probe];
        let Some(key) = row.get(column).and_then(join_key) else {
            return Ok(());
        };
        let parent_table = &plan.relations[parent.rel].table;
        let pks = run.lookup(parent_table, &parent.name, &key)?;
        if parent.rel == 0 {
            out.extend(pks);
            return Ok(());
        }
        for pk in pks {
            if let Some(parent_row) = run.row(parent_table, &pk)? {
                self.facts_joining(run, plan, parent.rel, &parent_row, out)?;
            }
        }
        Ok(())
    }

    /// The joined rows of fact row `pk` in the current row state; relation
    /// `skip` (a rolled-up dimension, joined by nothing else) is left out
    /// (`None` in every tuple).
    fn tuples_of<S: StateStore>(
        &self,
        run: &mut Run<'_, S>,
        plan: &Plan,
        pk: &str,
        skip: Option<usize>,
    ) -> Result<Vec<Tuple>, EngineError> {
        let Some(fact) = run.row(&plan.relations[0].table, pk)? else {
            return Ok(Vec::new());
        };
        let mut tuples: Vec<Tuple> = vec![vec![Some(fact)]];
        for join in &plan.joins {
            if skip == Some(join.rel) {
                for t in &mut tuples {
                    t.push(None);
                }
                continue;
            }
            let table = &plan.relations[join.rel].table;
            let (column, other) = &join.on[join.probe];
            let mut next = Vec::with_capacity(tuples.len());
            for t in tuples {
                let mut matched = false;
                if let Some(key) = value_in(&t, other).and_then(join_key) {
                    for pk in run.lookup(table, column, &key)? {
                        let Some(row) = run.row(table, &pk)? else {
                            continue;
                        };
                        let all_equal = join.on.iter().all(|(mine, other)| {
                            match (row.get(mine), value_in(&t, other)) {
                                (Some(a), Some(b)) => {
                                    sql_eq(&Datum::from_value(a), &Datum::from_value(b))
                                        == Some(true)
                                }
                                _ => false,
                            }
                        });
                        if all_equal {
                            let mut joined = t.clone();
                            joined.push(Some(row));
                            next.push(joined);
                            matched = true;
                        }
                    }
                }
                if !matched && join.kind == JoinKind::Left {
                    let mut extended = t;
                    extended.push(None);
                    next.push(extended);
                }
            }
            tuples = next;
        }
        Ok(tuples)
    }
}

/// Folds one weighted row (its aggregate arguments `args`) into a group's
/// state `slot` (`None`: the group does not exist yet; it is created with
/// `key`, and dropped again when its row count reaches 0).
fn fold_values(
    slot: &mut Option<GroupState>,
    key: Vec<Datum>,
    aggs: &[AggSpec],
    args: &[Datum],
    w: i64,
    stats: &mut ApplyStats,
) {
    if w < 0 && slot.is_none() {
        stats.missing_group_retractions += 1;
        return;
    }
    let st = slot.get_or_insert_with(|| GroupState::new(key, aggs));
    st.rows += w;
    for ((spec, acc), v) in aggs.iter().zip(st.accs.iter_mut()).zip(args) {
        if !acc.fold(spec.kind, v, w) {
            stats.inconsistent_retractions += 1;
        }
    }
    stats.rows_folded += 1;
    if st.rows <= 0 {
        if st.accs.iter().any(|a| !a.is_empty()) {
            stats.inconsistent_retractions += 1;
        }
        *slot = None;
    }
}

/// The fact-side values of a rolled-up relation's ON equalities in a joined
/// row (NULL where absent).
fn dimension_key(ru: &Rollup, t: &Tuple) -> Vec<Datum> {
    ru.on
        .iter()
        .map(|(_, other)| value_in(t, other).map_or(Datum::Null, Datum::from_value))
        .collect()
}

/// The key prefix of the sub-aggregates of one join key: the join keys'
/// texts, length-prefixed so that no key is a prefix of another's. `None`
/// when a value is NULL (it joins nothing).
fn key_prefix(key: &[Datum]) -> Option<String> {
    let texts: Option<Vec<String>> = key.iter().map(|d| join_key(&d.to_value())).collect();
    let text = texts?.join("\u{1f}");
    Some(format!("{}:{text}\u{1e}", text.len()))
}

/// The key prefix of the sub-aggregates a row of the rolled-up relation
/// joins (by its own ON columns).
fn dimension_prefix(ru: &Rollup, image: &Row) -> Option<String> {
    let key: Vec<Datum> = ru
        .on
        .iter()
        .map(|(mine, _)| image.get(mine).map_or(Datum::Null, Datum::from_value))
        .collect();
    key_prefix(&key)
}

/// Decodes a stored sub-aggregate of a rolled-up relation.
fn decode_sub(
    report: &Report,
    ru: &Rollup,
    key: &str,
    bytes: &[u8],
) -> Result<GroupState, EngineError> {
    let corrupt = |reason: String| EngineError::CorruptState {
        report: ru.namespace.clone(),
        key: key.to_string(),
        reason,
    };
    let state = codec::decode(bytes).map_err(corrupt)?;
    if state.accs.len() != report.plan.aggs.len()
        || state.key.len() != ru.on.len() + ru.base_keys.len()
    {
        return Err(corrupt(
            "state does not match the report definition (was the SQL changed without a rebuild?)"
                .to_string(),
        ));
    }
    Ok(state)
}

/// The value of column `c` in a joined row (None for a NULL-extended
/// relation or a missing column).
fn value_in<'t>(t: &'t Tuple, c: &ColRef) -> Option<&'t Value> {
    t.get(c.rel)?.as_deref()?.get(&c.name)
}

/// Records the tables, columns and indexes the row state of a report with
/// joins needs.
fn collect_row_needs(plan: &Plan, tables: &mut BTreeMap<String, RowTable>) {
    let table_of = |rel: usize| plan.relations[rel].table.clone();
    for r in &plan.relations {
        tables.entry(r.table.clone()).or_default();
    }
    let add_column = |tables: &mut BTreeMap<String, RowTable>, c: &ColRef| {
        if c.rel == LATE_BOUND {
            for r in &plan.relations {
                tables
                    .entry(r.table.clone())
                    .or_default()
                    .columns
                    .insert(c.name.clone());
            }
        } else {
            tables
                .entry(table_of(c.rel))
                .or_default()
                .columns
                .insert(c.name.clone());
        }
    };
    let exprs = plan
        .filter
        .iter()
        .chain(&plan.group_exprs)
        .chain(plan.aggs.iter().filter_map(|a| a.arg.as_ref()));
    for e in exprs {
        let mut cols = Vec::new();
        e.walk(&mut |n| {
            if let Expr::Col(c) = n {
                cols.push(c.clone());
            }
        });
        for c in &cols {
            add_column(tables, c);
        }
    }
    for join in &plan.joins {
        for (mine, other) in &join.on {
            let t = tables.entry(table_of(join.rel)).or_default();
            t.columns.insert(mine.clone());
            add_column(tables, other);
        }
        let (mine, other) = &join.on[join.probe];
        tables
            .entry(table_of(join.rel))
            .or_default()
            .indexes
            .insert(mine.clone());
        tables
            .entry(table_of(other.rel))
            .or_default()
            .indexes
            .insert(other.name.clone());
    }
}

fn decode_state(
    report: &Report,
    key: &str,
    bytes: Option<&[u8]>,
) -> Result<Option<GroupState>, EngineError> {
    let Some(bytes) = bytes else {
        return Ok(None);
    };
    let corrupt = |reason: String| EngineError::CorruptState {
        report: report.name.clone(),
        key: key.to_string(),
        reason,
    };
    let state = codec::decode(bytes).map_err(corrupt)?;
    if state.accs.len() != report.plan.aggs.len()
        || state.key.len() != report.plan.group_exprs.len()
    {
        return Err(corrupt(
            "state does not match the report definition (was the SQL changed without a rebuild?)"
                .to_string(),
        ));
    }
    Ok(Some(state))
}

/// The visible row of a group: none when it has no rows or fails HAVING.
fn output(plan: &Plan, st: &GroupState) -> Option<Output> {
    if st.rows <= 0 {
        return None;
    }
    let aggs = st.results(&plan.aggs);
    let cx = GroupCtx {
        keys: &st.key,
        aggs: &aggs,
    };
    if let Some(h) = &plan.having {
        if h.eval(&cx).truth() != Some(true) {
            return None;
        }
    }
    Some(Output {
        key: st.key.iter().map(Datum::to_value).collect(),
        values: plan
            .outputs
            .iter()
            .map(|o| o.eval(&cx).to_value())
            .collect(),
    })
}

fn result_row(report: &Report, key: Vec<Value>, values: Vec<Value>, deleted: bool) -> ResultRow {
    let plan = &report.plan;
    let tenant = plan
        .tenant_key
        .and_then(|i| key.get(i))
        .filter(|v| !v.is_null())
        .map(Value::key_text);
    let day = plan.date_key.and_then(|i| match key.get(i) {
        Some(Value::Date(d)) => Some(d.format("%Y-%m-%d").to_string()),
        Some(Value::Dt(dt)) => Some(dt.format("%Y-%m-%d").to_string()),
        // DATE_FORMAT(x, '%Y-%m-%d')
        Some(Value::S(s)) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .ok()
            .map(|d| d.format("%Y-%m-%d").to_string()),
        _ => None,
    });
    ResultRow {
        report: report.name.clone(),
        key,
        values,
        deleted,
        tenant,
        day,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStateStore;
    use crate::tenant::TenantColumns;
    use mdp_types::{EventId, Position, TenantId};
    use rust_decimal::Decimal;

    fn engine(sqls: &[(&str, &str)]) -> Engine {
        let reports = sqls.iter().map(|(name, sql)| {
            Report::parse(name, name, sql, &TenantColumns::default())
                .unwrap_or_else(|e| panic!("{e}"))
        });
        Engine::new(Arc::new(ReportSet::from_reports(reports)))
    }

    fn row(id: i64, merchant: i64, status: &str, amount: &str, day: &str) -> Row {
        let mut r = Row::new();
        r.insert("id".into(), Value::I(id));
        r.insert("merchant_id".into(), Value::I(merchant));
        r.insert("status".into(), Value::S(status.into()));
        r.insert(
            "amount".into(),
            Value::D(amount.parse().unwrap_or_default()),
        );
        r.insert(
            "created_at".into(),
            Value::Dt(
                chrono::NaiveDateTime::parse_from_str(
                    &format!("{day} 10:00:00"),
                    "%Y-%m-%d %H:%M:%S",
                )
                .unwrap_or_default(),
            ),
        );
        r
    }

    fn ev(table: &str, op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
        ChangeEvent {
            id: EventId("e".into()),
            source: "shop".into(),
            table: table.into(),
            op,
            tenant: TenantId("1".into()),
            partition: 0,
            pk: vec![],
            before,
            after,
            commit_ts_ms: 0,
            position: Position {
                file: "binlog.000001".into(),
                offset: 4,
                row: 0,
                snapshot: false,
            },
            captured_at_ms: 0,
        }
    }

    fn ins(r: Row) -> ChangeEvent {
        ev("orders", Op::Insert, None, Some(r))
    }
    fn upd(b: Row, a: Row) -> ChangeEvent {
        ev("orders", Op::Update, Some(b), Some(a))
    }
    fn del(b: Row) -> ChangeEvent {
        ev("orders", Op::Delete, Some(b), None)
    }

    fn d(s: &str) -> Value {
        Value::D(s.parse::<Decimal>().unwrap_or_default())
    }

    const DAILY: &str = "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, SUM(amount) AS gmv, MIN(amount) AS smallest FROM orders WHERE status <> 'cancelled' GROUP BY merchant_id, day";

    const ACROSS: &str = "SELECT DATE(created_at) AS day, COUNT(*) AS orders, SUM(amount) AS gmv, MIN(amount) AS smallest, COUNT(DISTINCT merchant_id) AS merchants FROM orders WHERE status <> 'cancelled' GROUP BY day";

    /// Merges partial deltas into global states; returns the rows emitted.
    fn merge_all(
        e: &Engine,
        global: &mut BTreeMap<String, Vec<u8>>,
        partials: &[PartialDelta],
    ) -> Vec<ResultRow> {
        let mut out = Vec::new();
        for p in partials {
            let report = e
                .reports()
                .get(&p.report)
                .unwrap_or_else(|| panic!("report"));
            let k = p.key_text();
            let st = merge_partial(report, global.get(&k).map(Vec::as_slice), p)
                .unwrap_or_else(|e| panic!("{e}"));
            match &st {
                Some(b) => global.insert(k, b.clone()),
                None => global.remove(&k),
            };
            out.push(partial_row(report, &p.key, st.as_deref()).unwrap_or_else(|e| panic!("{e}")));
        }
        out
    }

    #[test]
    fn partial_deltas_merge_across_partitions() {
        let e = engine(&[("across", ACROSS)]);
        let r = e
            .reports()
            .get("across")
            .unwrap_or_else(|| panic!("report"));
        assert_eq!(r.tenant_column, None);
        // Two partitions: merchant 7 in one, merchant 8 in the other.
        let (mut p0, mut p1) = (MemoryStateStore::new(), MemoryStateStore::new());
        let mut global = BTreeMap::new();
        let a = row(1, 7, "paid", "3.00", "2026-11-20");
        let b = row(2, 8, "paid", "5.00", "2026-11-20");
        let c = row(3, 8, "paid", "3.00", "2026-11-20");
        let x = e
            .apply_batch(&mut p0, &[ins(a.clone())])
            .unwrap_or_default();
        assert!(x.rows.is_empty());
        assert_eq!(x.partials.len(), 1);
        let y = e
            .apply_batch(&mut p1, &[ins(b.clone()), ins(c.clone())])
            .unwrap_or_default();
        let rows = merge_all(&e, &mut global, &y.partials);
        assert_eq!(
            rows[0].values[1..],
            [Value::I(2), d("8.00"), d("3.00"), Value::I(1)]
        );
        assert_eq!(rows[0].tenant, None);
        assert_eq!(rows[0].day.as_deref(), Some("2026-11-20"));
        let rows = merge_all(&e, &mut global, &x.partials);
        assert_eq!(
            rows[0].values[1..],
            [Value::I(3), d("11.00"), d("3.00"), Value::I(2)]
        );

        // MIN 3.00 is held by both partitions: retracting one keeps it.
        let x = e
            .apply_batch(&mut p0, &[del(a.clone())])
            .unwrap_or_default();
        let rows = merge_all(&e, &mut global, &x.partials);
        assert_eq!(
            rows[0].values[1..],
            [Value::I(2), d("8.00"), d("3.00"), Value::I(1)]
        );
        // Retracting the other moves MIN up; merchant 8 still counts once.
        let c2 = row(3, 8, "cancelled", "3.00", "2026-11-20");
        let y = e
            .apply_batch(&mut p1, &[upd(c.clone(), c2.clone())])
            .unwrap_or_default();
        let rows = merge_all(&e, &mut global, &y.partials);
        assert_eq!(
            rows[0].values[1..],
            [Value::I(1), d("5.00"), d("5.00"), Value::I(1)]
        );
        // The last row leaves: the group is deleted and its state dropped.
        let y = e
            .apply_batch(&mut p1, &[del(b.clone())])
            .unwrap_or_default();
        let rows = merge_all(&e, &mut global, &y.partials);
        assert!(rows[0].deleted && rows[0].values.is_empty());
        assert_eq!(rows[0].day.as_deref(), Some("2026-11-20"));
        assert!(global.is_empty());
        // Merging a delta twice is detected as inconsistent, not absorbed.
        let y = e
            .apply_batch(&mut p1, &[ins(b.clone())])
            .unwrap_or_default();
        merge_all(&e, &mut global, &y.partials);
        let z = e
            .apply_batch(&mut p1, &[del(b.clone())])
            .unwrap_or_default();
        merge_all(&e, &mut global, &z.partials);
        assert!(merge_partial(r, None, &z.partials[0]).is_err());
        // Keyed reports are unaffected by the split.
        let e = engine(&[("daily", DAILY), ("across", ACROSS)]);
        let x = e
            .apply_batch(&mut MemoryStateStore::new(), &[ins(a)])
            .unwrap_or_default();
        assert_eq!((x.rows.len(), x.partials.len()), (1, 1));
        assert_eq!(x.rows[0].report, "daily");
    }

    #[test]
    fn distinct_values_leave_across_partitions() {
        let sql = "SELECT status, COUNT(DISTINCT merchant_id) AS merchants, MAX(amount) AS largest FROM orders GROUP BY status";
        let e = engine(&[("st", sql)]);
        let (mut p0, mut p1) = (MemoryStateStore::new(), MemoryStateStore::new());
        let mut global = BTreeMap::new();
        let a = row(1, 7, "paid", "9.00", "2026-11-20");
        let b = row(2, 7, "paid", "4.00", "2026-11-21");
        let c = row(3, 8, "paid", "9.00", "2026-11-20");
        let x = e
            .apply_batch(&mut p0, &[ins(a.clone()), ins(b.clone())])
            .unwrap_or_default();
        let y = e
            .apply_batch(&mut p1, &[ins(c.clone())])
            .unwrap_or_default();
        merge_all(&e, &mut global, &x.partials);
        let rows = merge_all(&e, &mut global, &y.partials);
        assert_eq!(
            rows[0].values,
            [Value::S("paid".into()), Value::I(2), d("9.00")]
        );
        // Merchant 7 leaves 'paid' one order at a time.
        let x = e.apply_batch(&mut p0, &[del(a)]).unwrap_or_default();
        let rows = merge_all(&e, &mut global, &x.partials);
        assert_eq!(
            rows[0].values,
            [Value::S("paid".into()), Value::I(2), d("9.00")]
        );
        let b2 = row(2, 7, "shipped", "4.00", "2026-11-21");
        let x = e.apply_batch(&mut p0, &[upd(b, b2)]).unwrap_or_default();
        let rows = merge_all(&e, &mut global, &x.partials);
        assert_eq!(rows.len(), 2);
        let paid = rows.iter().find(|r| r.key[0] == Value::S("paid".into()));
        assert_eq!(
            paid.map(|r| r.values.clone()),
            Some(vec![Value::S("paid".into()), Value::I(1), d("9.00")])
        );
        let shipped = rows.iter().find(|r| r.key[0] == Value::S("shipped".into()));
        assert_eq!(
            shipped.map(|r| r.values.clone()),
            Some(vec![Value::S("shipped".into()), Value::I(1), d("4.00")])
        );
        assert_eq!(rows[0].tenant, None);
    }

    #[test]
    fn a_day_formatted_as_a_date_is_the_rows_day() {
        let e = engine(&[(
            "fmt",
            "SELECT merchant_id, DATE_FORMAT(created_at, '%Y-%m-%d') AS day, COUNT(*) AS n FROM orders GROUP BY merchant_id, day",
        )]);
        let mut st = MemoryStateStore::new();
        let rows = e
            .apply(&mut st, &[ins(row(1, 7, "paid", "1.00", "2026-11-20"))])
            .unwrap_or_default();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].key[1], Value::S("2026-11-20".into()));
        assert_eq!(rows[0].day.as_deref(), Some("2026-11-20"));
    }

    #[test]
    fn inserts_updates_and_deletes_emit_absolute_rows() {
        let e = engine(&[("daily", DAILY)]);
        let mut st = MemoryStateStore::new();
        let a = row(1, 7, "paid", "10.00", "2026-11-20");
        let b = row(2, 7, "paid", "5.50", "2026-11-20");
        let rows = e
            .apply(&mut st, &[ins(a.clone()), ins(b.clone())])
            .unwrap_or_default();
        assert_eq!(rows.len(), 1);
        let r = &rows[0];
        assert_eq!(r.report, "daily");
        assert_eq!(
            r.key,
            vec![
                Value::I(7),
                Value::Date(chrono::NaiveDate::from_ymd_opt(2026, 11, 20).unwrap_or_default())
            ]
        );
        assert_eq!(
            r.values,
            vec![
                r.key[0].clone(),
                r.key[1].clone(),
                Value::I(2),
                d("15.50"),
                d("5.50")
            ]
        );
        assert_eq!(r.tenant.as_deref(), Some("7"));
        assert_eq!(r.day.as_deref(), Some("2026-11-20"));
        assert!(!r.deleted);

        // Cancel the smallest order: MIN moves up, the count drops.
        let b2 = row(2, 7, "cancelled", "5.50", "2026-11-20");
        let rows = e
            .apply(&mut st, &[upd(b.clone(), b2.clone())])
            .unwrap_or_default();
        assert_eq!(rows[0].values[2..], [Value::I(1), d("10.00"), d("10.00")]);

        // Move the remaining order to another day: old group deleted, new one created.
        let a2 = row(1, 7, "paid", "10.00", "2026-11-21");
        let (rows, stats) = e
            .apply_with_stats(&mut st, &[upd(a.clone(), a2.clone())])
            .unwrap_or_default();
        assert_eq!(rows.len(), 2);
        assert!(rows[0].deleted && rows[0].values.is_empty());
        assert_eq!(rows[0].day.as_deref(), Some("2026-11-20"));
        assert_eq!(rows[0].tenant.as_deref(), Some("7"));
        assert_eq!(rows[1].day.as_deref(), Some("2026-11-21"));
        assert_eq!(stats.groups_touched, 2);
        assert_eq!(st.group_count("daily"), 1);

        // An update that changes nothing the report reads emits nothing.
        let mut a3 = a2.clone();
        a3.insert("note".into(), Value::S("gift".into()));
        assert!(e
            .apply(&mut st, &[upd(a2.clone(), a3.clone())])
            .unwrap_or_default()
            .is_empty());

        // Insert and delete inside one window: nothing to emit, no state left.
        let c = row(3, 8, "paid", "1.00", "2026-11-21");
        assert!(e
            .apply(&mut st, &[ins(c.clone()), del(c)])
            .unwrap_or_default()
            .is_empty());
        assert_eq!(st.group_count("daily"), 1);

        let rows = e.apply(&mut st, &[del(a3)]).unwrap_or_default();
        assert!(rows[0].deleted);
        assert_eq!(st.group_count("daily"), 0);
    }

    #[test]
    fn having_hides_and_shows_groups() {
        let e = engine(&[(
            "big",
            "SELECT merchant_id, COUNT(*) AS n FROM orders GROUP BY merchant_id HAVING n >= 2",
        )]);
        let mut st = MemoryStateStore::new();
        let a = row(1, 7, "paid", "1.00", "2026-11-20");
        let b = row(2, 7, "paid", "1.00", "2026-11-20");
        assert!(e
            .apply(&mut st, &[ins(a.clone())])
            .unwrap_or_default()
            .is_empty());
        let rows = e.apply(&mut st, &[ins(b.clone())]).unwrap_or_default();
        assert_eq!(rows[0].values, [Value::I(7), Value::I(2)]);
        let rows = e.apply(&mut st, &[del(b)]).unwrap_or_default();
        assert!(rows[0].deleted);
        assert_eq!(st.group_count("big"), 1);
    }

    #[test]
    fn lost_state_is_counted_not_hidden() {
        let e = engine(&[("daily", DAILY)]);
        let mut st = MemoryStateStore::new();
        let a = row(1, 7, "paid", "10.00", "2026-11-20");
        let (rows, stats) = e
            .apply_with_stats(&mut st, &[del(a.clone())])
            .unwrap_or_default();
        assert!(rows.is_empty());
        assert_eq!(stats.missing_group_retractions, 1);
        assert_eq!(st.group_count("daily"), 0);
        // A retraction of a value the group does not hold.
        e.apply(&mut st, &[ins(a.clone())]).unwrap_or_default();
        let mut other = a.clone();
        other.insert("amount".into(), d("99.00"));
        let other2 = row(5, 7, "paid", "1.00", "2026-11-20");
        let (_, stats) = e
            .apply_with_stats(&mut st, &[upd(other, other2)])
            .unwrap_or_default();
        // MIN lacked 99.00, and the group emptied with 10.00 still in MIN.
        assert_eq!(stats.inconsistent_retractions, 2);
        // Malformed events and missing columns are counted.
        let mut partial = Row::new();
        partial.insert("merchant_id".into(), Value::I(9));
        let (_, stats) = e
            .apply_with_stats(&mut st, &[ev("orders", Op::Update, None, Some(partial))])
            .unwrap_or_default();
        assert_eq!(stats.malformed_events, 1);
        // `status` is missing: WHERE sees NULL and skips the row.
        assert_eq!(stats.missing_columns, 1, "{stats:?}");
        assert_eq!(stats.rows_folded, 0);
    }

    #[test]
    fn reset_drops_every_group_and_snapshot_rebuilds() {
        let e = engine(&[("daily", DAILY)]);
        let mut st = MemoryStateStore::new();
        let a = row(1, 7, "paid", "10.00", "2026-11-20");
        let b = row(2, 8, "paid", "3.00", "2026-11-20");
        e.apply(&mut st, &[ins(a.clone()), ins(b.clone())])
            .unwrap_or_default();
        // Reset then a snapshot holding only `a` (b was deleted meanwhile).
        let snap = ev("orders", Op::Snapshot, None, Some(a.clone()));
        let (rows, stats) = e
            .apply_with_stats(&mut st, &[ev("orders", Op::Reset, None, None), snap])
            .unwrap_or_default();
        assert_eq!(stats.resets, 1);
        // a's group is unchanged (not emitted); b's group is gone.
        assert_eq!(rows.len(), 1);
        assert!(rows[0].deleted);
        assert_eq!(rows[0].tenant.as_deref(), Some("8"));
        assert_eq!(st.group_count("daily"), 1);
    }

    #[test]
    fn engine_is_shareable_between_threads() {
        fn check<T: Send + Sync + Clone>() {}
        check::<Engine>();
        check::<Arc<ReportSet>>();
    }

    #[test]
    fn other_tables_are_ignored() {
        let e = engine(&[("daily", DAILY)]);
        let mut st = MemoryStateStore::new();
        let (rows, stats) = e
            .apply_with_stats(
                &mut st,
                &[ev("products", Op::Insert, None, Some(Row::new()))],
            )
            .unwrap_or_default();
        assert!(rows.is_empty());
        assert_eq!(stats.changes_ignored, 1);
        assert_eq!(st.size_bytes(), 0);
    }

    #[test]
    fn large_multisets_are_written_by_the_chunk() {
        const SQL: &str = "SELECT merchant_id, COUNT(*) AS orders, MIN(amount) AS smallest, MAX(amount) AS largest, COUNT(DISTINCT amount) AS amounts FROM orders GROUP BY merchant_id";
        let e = engine(&[("m", SQL)]).with_chunk_sizes(ChunkSizes {
            spill_above: 8,
            inline_at_most: 2,
            chunk_max: 4,
            chunk_fill: 3,
            range_read_from: 4,
        });
        let mut st = MemoryStateStore::new();
        let order = |id: i64| row(id, 7, "paid", &format!("{id}.00"), "2026-11-20");
        let values = |rows: &[ResultRow]| rows.first().map(|r| r.values[1..].to_vec());
        let all: Vec<ChangeEvent> = (1..=40).map(|i| ins(order(i))).collect();
        let rows = e.apply(&mut st, &all).unwrap_or_default();
        assert_eq!(
            values(&rows),
            Some(vec![Value::I(40), d("1.00"), d("40.00"), Value::I(40)])
        );
        // Three multisets (MIN, MAX, COUNT(DISTINCT)) of 40 values, in
        // chunks of 3 (the last of 1).
        assert_eq!(st.group_count("m#values"), 3 * 14);

        // One changed value (old and new in one chunk) rewrites that chunk
        // of each of the three multisets: 3 of the 42.
        let before = st.groups_of("m#values").unwrap_or_default();
        let mut moved = order(20);
        moved.insert("amount".into(), d("20.50"));
        let rows = e
            .apply(&mut st, &[upd(order(20), moved.clone())])
            .unwrap_or_default();
        assert!(rows.is_empty(), "no visible change: {rows:?}");
        let after = st.groups_of("m#values").unwrap_or_default();
        assert_eq!(before.len(), after.len());
        let rewritten = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert_eq!(rewritten, 3);

        // The smallest values leave: MIN comes from a later chunk.
        let gone: Vec<ChangeEvent> = (1..=10).map(|i| del(order(i))).collect();
        let rows = e.apply(&mut st, &gone).unwrap_or_default();
        assert_eq!(
            values(&rows),
            Some(vec![Value::I(30), d("11.00"), d("40.00"), Value::I(30)])
        );
        // Grows again: chunks split as they fill.
        let more: Vec<ChangeEvent> = (41..=60).map(|i| ins(order(i))).collect();
        let rows = e.apply(&mut st, &more).unwrap_or_default();
        assert_eq!(
            values(&rows),
            Some(vec![Value::I(50), d("11.00"), d("60.00"), Value::I(50)])
        );
        // Nearly empty: back inline, and no chunk is left behind.
        let keep = [11, 12];
        let gone: Vec<ChangeEvent> = (11..=60)
            .filter(|i| !keep.contains(i))
            .map(|i| {
                if i == 20 {
                    del(moved.clone())
                } else {
                    del(order(i))
                }
            })
            .collect();
        let rows = e.apply(&mut st, &gone).unwrap_or_default();
        assert_eq!(
            values(&rows),
            Some(vec![Value::I(2), d("11.00"), d("12.00"), Value::I(2)])
        );
        assert_eq!(st.group_count("m#values"), 0);
        let rows = e
            .apply(&mut st, &[del(order(11)), del(order(12))])
            .unwrap_or_default();
        assert!(rows.first().is_some_and(|r| r.deleted));
        assert_eq!(st.size_bytes(), 0);
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let e = engine(&[("daily", DAILY)]);
        let mut st = MemoryStateStore::new();
        let a = row(1, 7, "paid", "10.00", "2026-11-20");
        let key = "7\u{1f}2026-11-20";
        st.store_group("daily", key, Some(&[1, 2, 3]))
            .unwrap_or_default();
        let err = e.apply(&mut st, &[ins(a)]).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "state of report daily group \"7\\u{1f}2026-11-20\" is unreadable: truncated state"
            )
        );
    }

    mod joins {
        use super::*;
        use crate::store::RowIndex;

        fn shop_engine(sqls: &[(&str, &str)]) -> Engine {
            let mut t = TenantColumns::default();
            t.per_table.insert("merchants".into(), "id".into());
            let reports = sqls.iter().map(|(name, sql)| {
                Report::parse(name, name, sql, &t).unwrap_or_else(|e| panic!("{e}"))
            });
            Engine::new(Arc::new(ReportSet::from_reports(reports)))
        }

        fn r(cols: &[(&str, Value)]) -> Row {
            cols.iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect()
        }

        fn s(x: &str) -> Value {
            Value::S(x.into())
        }

        fn keyed(
            table: &str,
            op: Op,
            id: i64,
            before: Option<Row>,
            after: Option<Row>,
        ) -> ChangeEvent {
            let mut e = ev(table, op, before, after);
            e.pk = vec![Value::I(id)];
            e
        }

        fn order(id: i64, status: &str) -> Row {
            r(&[
                ("id", Value::I(id)),
                ("merchant_id", Value::I(1)),
                ("status", s(status)),
                ("note", s("")),
            ])
        }

        fn item(id: i64, order: i64, product: i64, qty: i64) -> Row {
            r(&[
                ("id", Value::I(id)),
                ("merchant_id", Value::I(1)),
                ("order_id", Value::I(order)),
                ("product_id", Value::I(product)),
                ("qty", Value::I(qty)),
            ])
        }

        fn product(id: i64, category: &str) -> Row {
            r(&[
                ("id", Value::I(id)),
                ("merchant_id", Value::I(1)),
                ("category", s(category)),
            ])
        }

        const ITEMS: &str = "SELECT i.merchant_id, p.category, SUM(i.qty) AS units FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id WHERE o.status = 'paid' GROUP BY i.merchant_id, p.category";
        const LEFT: &str = "SELECT i.merchant_id, p.category, COUNT(*) AS n FROM order_items i LEFT JOIN products p ON p.id = i.product_id GROUP BY i.merchant_id, p.category";

        /// (category, value) of every non-deleted row, and the deleted keys.
        fn summary(rows: &[ResultRow]) -> (Vec<(Value, Value)>, Vec<Value>) {
            let live = rows
                .iter()
                .filter(|r| !r.deleted)
                .map(|r| (r.values[1].clone(), r.values[2].clone()))
                .collect();
            let gone = rows
                .iter()
                .filter(|r| r.deleted)
                .map(|r| r.key[1].clone())
                .collect();
            (live, gone)
        }

        #[test]
        fn changes_of_joined_rows_move_the_fact_rows() {
            let e = shop_engine(&[("items", ITEMS)]);
            let mut st = MemoryStateStore::new();
            let rows = e
                .apply(
                    &mut st,
                    &[
                        keyed("products", Op::Insert, 10, None, Some(product(10, "toys"))),
                        keyed("orders", Op::Insert, 1, None, Some(order(1, "cart"))),
                        keyed(
                            "order_items",
                            Op::Insert,
                            100,
                            None,
                            Some(item(100, 1, 10, 2)),
                        ),
                        keyed(
                            "order_items",
                            Op::Insert,
                            101,
                            None,
                            Some(item(101, 1, 10, 3)),
                        ),
                    ],
                )
                .unwrap_or_default();
            assert!(rows.is_empty(), "a cart is not counted: {rows:?}");

            // The order becomes paid: its items come in.
            let rows = e
                .apply(
                    &mut st,
                    &[keyed(
                        "orders",
                        Op::Update,
                        1,
                        Some(order(1, "cart")),
                        Some(order(1, "paid")),
                    )],
                )
                .unwrap_or_default();
            assert_eq!(summary(&rows), (vec![(s("toys"), Value::I(5))], vec![]));

            // A change no report reads emits nothing and rejoins nothing.
            let mut noted = order(1, "paid");
            noted.insert("note".into(), s("gift"));
            let (rows, stats) = e
                .apply_with_stats(
                    &mut st,
                    &[keyed(
                        "orders",
                        Op::Update,
                        1,
                        Some(order(1, "paid")),
                        Some(noted.clone()),
                    )],
                )
                .unwrap_or_default();
            assert!(rows.is_empty());
            assert_eq!((stats.row_changes, stats.fact_rows_rejoined), (0, 0));

            // The product changes category: both items move.
            let (rows, stats) = e
                .apply_with_stats(
                    &mut st,
                    &[keyed(
                        "products",
                        Op::Update,
                        10,
                        Some(product(10, "toys")),
                        Some(product(10, "books")),
                    )],
                )
                .unwrap_or_default();
            assert_eq!(
                summary(&rows),
                (vec![(s("books"), Value::I(5))], vec![s("toys")])
            );
            // `products` is rolled up: the items' one sub-aggregate (order
            // 1's merchant and day) moves, no item is re-joined.
            assert_eq!(
                (stats.fact_rows_rejoined, stats.subaggregates_moved),
                (0, 1)
            );

            // The product is deleted: the inner join drops the items.
            let rows = e
                .apply(
                    &mut st,
                    &[keyed(
                        "products",
                        Op::Delete,
                        10,
                        Some(product(10, "books")),
                        None,
                    )],
                )
                .unwrap_or_default();
            assert_eq!(summary(&rows), (vec![], vec![s("books")]));
            assert_eq!(st.group_count("items"), 0);

            // It comes back: the items are found again.
            let rows = e
                .apply(
                    &mut st,
                    &[keyed(
                        "products",
                        Op::Insert,
                        10,
                        None,
                        Some(product(10, "food")),
                    )],
                )
                .unwrap_or_default();
            assert_eq!(summary(&rows), (vec![(s("food"), Value::I(5))], vec![]));

            // Deleting the order (its items stay) drops them too.
            let rows = e
                .apply(
                    &mut st,
                    &[keyed("orders", Op::Delete, 1, Some(noted), None)],
                )
                .unwrap_or_default();
            assert_eq!(summary(&rows), (vec![], vec![s("food")]));
            assert_eq!(st.row_count("orders"), 0);
            assert_eq!(st.row_count("order_items"), 2);
        }

        #[test]
        fn left_joins_keep_unmatched_rows_null_extended() {
            let e = shop_engine(&[("left", LEFT)]);
            let mut st = MemoryStateStore::new();
            let rows = e
                .apply(
                    &mut st,
                    &[keyed(
                        "order_items",
                        Op::Insert,
                        100,
                        None,
                        Some(item(100, 1, 10, 2)),
                    )],
                )
                .unwrap_or_default();
            assert_eq!(summary(&rows), (vec![(Value::Null, Value::I(1))], vec![]));
            let rows = e
                .apply(
                    &mut st,
                    &[keyed(
                        "products",
                        Op::Snapshot,
                        10,
                        None,
                        Some(product(10, "toys")),
                    )],
                )
                .unwrap_or_default();
            assert_eq!(
                summary(&rows),
                (vec![(s("toys"), Value::I(1))], vec![Value::Null])
            );
            // A re-snapshot of products without product 10: NULL-extended again.
            let (rows, stats) = e
                .apply_with_stats(&mut st, &[ev("products", Op::Reset, None, None)])
                .unwrap_or_default();
            assert_eq!(
                summary(&rows),
                (vec![(Value::Null, Value::I(1))], vec![s("toys")])
            );
            assert_eq!(stats.resets, 1);
            assert_eq!(st.row_count("products"), 0);
        }

        #[test]
        fn a_city_change_moves_the_merchants_history() {
            let e = shop_engine(&[(
                "cities",
                "SELECT o.merchant_id, city, COUNT(*) AS orders FROM orders o JOIN merchants m ON m.id = o.merchant_id GROUP BY o.merchant_id, city",
            )]);
            let mut st = MemoryStateStore::new();
            let paris = r(&[("id", Value::I(1)), ("city", s("Paris"))]);
            let lyon = r(&[("id", Value::I(1)), ("city", s("Lyon"))]);
            let mut events = vec![keyed("merchants", Op::Insert, 1, None, Some(paris.clone()))];
            for id in 1..=3 {
                events.push(keyed(
                    "orders",
                    Op::Insert,
                    id,
                    None,
                    Some(order(id, "paid")),
                ));
            }
            let rows = e.apply(&mut st, &events).unwrap_or_default();
            assert_eq!(summary(&rows), (vec![(s("Paris"), Value::I(3))], vec![]));
            let (rows, stats) = e
                .apply_with_stats(
                    &mut st,
                    &[keyed("merchants", Op::Update, 1, Some(paris), Some(lyon))],
                )
                .unwrap_or_default();
            assert_eq!(
                summary(&rows),
                (vec![(s("Lyon"), Value::I(3))], vec![s("Paris")])
            );
            assert_eq!(stats.fact_rows_rejoined, 3);
            assert_eq!(
                e.row_tables(),
                BTreeSet::from(["merchants".to_string(), "orders".to_string()])
            );
            let idx = |t: &str, c: &str| RowIndex {
                table: t.into(),
                column: c.into(),
            };
            assert_eq!(
                e.required_indexes(),
                BTreeSet::from([idx("merchants", "id"), idx("orders", "merchant_id")])
            );
            assert_eq!(
                e.row_columns("merchants")
                    .map(|c| c.iter().cloned().collect::<Vec<_>>()),
                Some(vec!["city".to_string(), "id".to_string()])
            );
        }

        #[test]
        fn disagreements_with_the_stored_rows_are_counted() {
            let e = shop_engine(&[("items", ITEMS)]);
            let mut st = MemoryStateStore::new();
            let ins = keyed("orders", Op::Insert, 1, None, Some(order(1, "paid")));
            e.apply(&mut st, std::slice::from_ref(&ins))
                .unwrap_or_default();
            // The same insert again, an update whose before image is not
            // the stored row, a delete of a row never stored, an event
            // without primary key.
            let mut no_pk = keyed("orders", Op::Insert, 2, None, Some(order(2, "paid")));
            no_pk.pk.clear();
            let (_, stats) = e
                .apply_with_stats(
                    &mut st,
                    &[
                        ins,
                        keyed(
                            "orders",
                            Op::Update,
                            1,
                            Some(order(1, "cart")),
                            Some(order(1, "shipped")),
                        ),
                        keyed("orders", Op::Delete, 9, Some(order(9, "paid")), None),
                        no_pk,
                    ],
                )
                .unwrap_or_default();
            assert_eq!(stats.row_mismatches, 3, "{stats:?}");
            assert_eq!(stats.malformed_events, 1, "{stats:?}");
            // The stored row was what got replaced.
            let stored = st
                .load_row("orders", "1")
                .unwrap_or_default()
                .map(|b| codec::decode_row(&b));
            assert_eq!(
                stored
                    .and_then(Result::ok)
                    .and_then(|r| r.get("status").cloned()),
                Some(s("shipped"))
            );
            st.store_row("orders", "1", Some((&[9, 9], &[])))
                .unwrap_or(());
            let err = e
                .apply(
                    &mut st,
                    &[keyed(
                        "orders",
                        Op::Delete,
                        1,
                        Some(order(1, "shipped")),
                        None,
                    )],
                )
                .err()
                .map(|e| e.to_string());
            assert_eq!(
                err.as_deref(),
                Some("stored row \"1\" of table orders is unreadable: unknown row format 9")
            );
        }
    }
}
