//! Streaming the binlog as a replica: row events of captured tables become
//! change events, transaction ends become resume boundaries.
//!
//! MariaDB writes V1 rows events (types 23–25), MySQL V2 (30–32); both are
//! handled. Column names and types come from table maps written with
//! `binlog_row_metadata=FULL`, so an `ALTER TABLE` is picked up from the next
//! table map without any schema lookup.

use super::convert::{convert_binlog, Collations, ColumnKind, TextEncoding};
use super::events::{route_change, RowContext};
use super::schema::{layout_of_table_map, TableInfo};
use super::snapshot::{routed_item, send};
use super::source::{self, SourceError};
use super::CdcItem;
use crate::configuration::IngestConfig;
use crate::state::IngestState;
use crate::store::BinlogPosition;
use futures::StreamExt;
use mdp_types::{now_ms, Op, Position, Row, Value};
use mysql_async::binlog::events::{Event, EventData, RowsEventData, TableMapEvent};
use mysql_async::binlog::row::BinlogRow;
use mysql_async::prelude::Queryable;
use mysql_async::BinlogStreamRequest;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::Sender;
use tokio_util::sync::CancellationToken;

/// The source sends a heartbeat event after this much idle time.
const HEARTBEAT_PERIOD: Duration = Duration::from_secs(1);
/// A stream silent for this long is considered dead and reconnected.
const SILENCE_LIMIT: Duration = Duration::from_secs(15);
/// After this long with only heartbeats, check whether the stream waits at
/// the end of a binlog file the source no longer writes (see
/// [`BinlogReader::next_file_after_dead_end`]); while the source stays
/// quiet the interval doubles up to [`DEAD_END_CHECK_MAX`].
const DEAD_END_CHECK_AFTER: Duration = Duration::from_secs(3);
const DEAD_END_CHECK_MAX: Duration = Duration::from_secs(60);
/// Binlog event type of a heartbeat.
const HEARTBEAT_EVENT: u8 = 27;

struct CachedTable {
    tme: TableMapEvent<'static>,
    /// `None` for tables that are not captured.
    info: Option<Arc<TableInfo>>,
}

/// Reads the binlog from a transaction boundary, across reconnects.
pub struct BinlogReader {
    cfg: Arc<IngestConfig>,
    tx: Sender<CdcItem>,
    state: IngestState,
    /// Last boundary sent: a reconnect resumes here.
    resume: BinlogPosition,
    /// Last row position sent: rows at or before it are not sent twice after a reconnect.
    last_row: Option<Position>,
    tables: HashMap<u64, CachedTable>,
    /// Primary keys from `information_schema`, with the column list they were read for.
    pk_cache: HashMap<String, (Vec<String>, Vec<String>)>,
    collations: Collations,
}

/// Per-connection stream state.
struct StreamState {
    file: String,
    seen_format_description: bool,
    in_transaction: bool,
}

impl BinlogReader {
    pub fn new(
        cfg: Arc<IngestConfig>,
        tx: Sender<CdcItem>,
        state: IngestState,
        start: BinlogPosition,
    ) -> Self {
        BinlogReader {
            cfg,
            tx,
            state,
            resume: start,
            last_row: None,
            tables: HashMap::new(),
            pk_cache: HashMap::new(),
            collations: Collations::default(),
        }
    }

    /// Where the next connection starts.
    pub fn resume_position(&self) -> &BinlogPosition {
        &self.resume
    }

    /// Connects and streams until the connection fails or `cancel` fires
    /// (`Ok(())`). `on_connected` runs once the stream delivered its first event.
    #[tracing::instrument(skip_all, fields(file = %self.resume.file, pos = self.resume.pos))]
    pub async fn stream_once(
        &mut self,
        cancel: &CancellationToken,
        on_connected: &dyn Fn(),
    ) -> Result<(), SourceError> {
        let mut conn = source::connect(&self.cfg.source_opts).await?;
        source::check_binlog_settings(&mut conn).await?;
        self.collations = source::collations(&mut conn).await?;
        let period_ns = HEARTBEAT_PERIOD.as_nanos().to_string();
        conn.query_drop(format!("SET @master_heartbeat_period = {period_ns}"))
            .await
            .map_err(SourceError::query("heartbeat period"))?;
        let request = BinlogStreamRequest::new(self.cfg.server_id)
            .with_filename(self.resume.file.as_bytes())
            .with_pos(self.resume.pos);
        let mut stream = conn
            .get_binlog_stream(request)
            .await
            .map_err(SourceError::Stream)?;
        tracing::info!(file = %self.resume.file, pos = self.resume.pos, "binlog streaming started");

        // Table ids are only meaningful within one server run.
        self.tables.clear();
        let mut st = StreamState {
            file: self.resume.file.clone(),
            seen_format_description: false,
            in_transaction: false,
        };
        let mut connected = false;
        // Next dead-end check, and the wait before the one after it.
        let mut check_at = Instant::now() + DEAD_END_CHECK_AFTER;
        let mut check_every = DEAD_END_CHECK_AFTER;
        loop {
            let next = tokio::select! {
                biased;
                _ = cancel.cancelled() => return Ok(()),
                next = tokio::time::timeout(SILENCE_LIMIT, stream.next()) => next,
            };
            let event = match next {
                Err(_) => return Err(SourceError::Silent(SILENCE_LIMIT.as_secs())),
                Ok(None) => return Err(SourceError::Closed),
                Ok(Some(Err(e))) => return Err(SourceError::Stream(e)),
                Ok(Some(Ok(event))) => event,
            };
            if !connected {
                connected = true;
                on_connected();
            }
            if event.header().event_type_raw() != HEARTBEAT_EVENT {
                check_every = DEAD_END_CHECK_AFTER;
                check_at = Instant::now() + check_every;
            } else if !st.in_transaction && Instant::now() >= check_at {
                check_every = (check_every * 2).min(DEAD_END_CHECK_MAX);
                check_at = Instant::now() + check_every;
                if let Some(next) = self.next_file_after_dead_end(&st).await? {
                    tracing::warn!(
                        file = %st.file,
                        pos = self.resume.pos,
                        next = %next,
                        "binlog file ended without a rotate event (the source stopped while writing it): continuing with the next file"
                    );
                    let from = std::mem::replace(&mut st.file, next.clone());
                    self.boundary(BinlogPosition {
                        file: next.clone(),
                        pos: BINLOG_FIRST_EVENT_POS,
                    })
                    .await?;
                    return Err(SourceError::FileEnded { file: from, next });
                }
            }
            self.on_event(&event, &mut st).await?;
        }
    }

    /// The next binlog file, when the stream sits at the end of `st.file`
    /// while the source writes a later file. A source that crashed leaves
    /// its last file without the rotate event that would move a reader on,
    /// and MariaDB's dump thread then waits at that file's end for good.
    async fn next_file_after_dead_end(
        &self,
        st: &StreamState,
    ) -> Result<Option<String>, SourceError> {
        if self.resume.file != st.file {
            return Ok(None);
        }
        let mut conn = source::connect(&self.cfg.source_opts).await?;
        let logs: Vec<(String, u64)> = conn
            .query_map("SHOW BINARY LOGS", |row: mysql_async::Row| {
                let name: Option<String> = row.get(0);
                let size: Option<u64> = row.get(1);
                (name.unwrap_or_default(), size.unwrap_or(0))
            })
            .await
            .map_err(SourceError::query("binary logs"))?;
        let _ = conn.disconnect().await;
        Ok(dead_end_next(&logs, &self.resume))
    }

    async fn on_event(&mut self, event: &Event, st: &mut StreamState) -> Result<(), SourceError> {
        let header = event.header();
        let log_pos = u64::from(header.log_pos());
        tracing::trace!(
            event_type = header.event_type_raw(),
            log_pos,
            "binlog event"
        );
        let Some(data) = event.read_data().map_err(SourceError::Decode)? else {
            tracing::trace!(
                event_type = header.event_type_raw(),
                log_pos,
                "unknown binlog event skipped"
            );
            return Ok(());
        };
        match data {
            EventData::FormatDescriptionEvent(_) => st.seen_format_description = true,
            // The first, artificial rotate arrives before the format description,
            // so its name is parsed with the checksum still attached: the file
            // name is the one requested anyway, and the rotate is skipped.
            EventData::RotateEvent(r) if st.seen_format_description => {
                st.file = r.name().into_owned();
                if !st.in_transaction {
                    self.boundary(BinlogPosition {
                        file: st.file.clone(),
                        pos: r.position(),
                    })
                    .await?;
                }
            }
            EventData::TableMapEvent(tme) => self.on_table_map(&tme).await?,
            EventData::RowsEvent(rows) => {
                let commit_ts_ms = i64::from(header.timestamp()) * 1000;
                self.on_rows(&rows, &st.file, log_pos, commit_ts_ms).await?;
            }
            EventData::XidEvent(_) => {
                st.in_transaction = false;
                self.boundary_at(&st.file, log_pos).await?;
            }
            EventData::QueryEvent(q) => {
                let sql = q.query();
                let sql = sql.trim();
                let word = sql
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_ascii_uppercase();
                tracing::trace!(statement = %word, in_transaction = st.in_transaction, log_pos, "query event");
                match word.as_str() {
                    "BEGIN" => st.in_transaction = true,
                    "COMMIT" | "ROLLBACK" => {
                        st.in_transaction = false;
                        self.boundary_at(&st.file, log_pos).await?;
                    }
                    // DDL and other statements logged outside a transaction.
                    _ if !st.in_transaction => self.boundary_at(&st.file, log_pos).await?,
                    _ => {}
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn boundary_at(&mut self, file: &str, log_pos: u64) -> Result<(), SourceError> {
        // Artificial events carry no position.
        if log_pos == 0 {
            return Ok(());
        }
        self.boundary(BinlogPosition {
            file: file.to_string(),
            pos: log_pos,
        })
        .await
    }

    async fn boundary(&mut self, pos: BinlogPosition) -> Result<(), SourceError> {
        if !is_after(&pos, &self.resume) {
            return Ok(());
        }
        tracing::trace!(position = %pos, "transaction boundary");
        send(&self.tx, CdcItem::Boundary(pos.clone())).await?;
        self.state.set_read(pos.clone());
        self.resume = pos;
        Ok(())
    }

    async fn on_table_map(&mut self, tme: &TableMapEvent<'_>) -> Result<(), SourceError> {
        let id = tme.table_id();
        if let Some(cached) = self.tables.get(&id) {
            if cached.tme == *tme {
                return Ok(());
            }
        }
        let db = tme.database_name().into_owned();
        let table = tme.table_name().into_owned();
        let info = if self.cfg.captures(&db, &table) {
            let layout = layout_of_table_map(tme, &self.collations)?;
            let names: Vec<String> = layout.columns.iter().map(|c| c.name.clone()).collect();
            let pk_names = match &layout.pk {
                Some(idx) => idx.iter().map(|i| names[*i].clone()).collect(),
                None => self.primary_key(&table, &names).await?,
            };
            let info = TableInfo::new(
                &table,
                layout.columns,
                self.cfg.tenant_column_of(&table),
                &pk_names,
            );
            if info.tenant.is_none() {
                tracing::warn!(
                    table = %table,
                    tenant_column = self.cfg.tenant_column_of(&table),
                    "captured table has no tenant column, its rows go to the dead-letter queue"
                );
            }
            tracing::debug!(table = %table, table_id = id, columns = info.columns.len(), pk = ?pk_names, "table map");
            Some(Arc::new(info))
        } else {
            None
        };
        self.tables.insert(
            id,
            CachedTable {
                tme: tme.clone().into_owned(),
                info,
            },
        );
        Ok(())
    }

    /// Primary key from `information_schema`, re-read when the column set changed.
    async fn primary_key(
        &mut self,
        table: &str,
        columns: &[String],
    ) -> Result<Vec<String>, SourceError> {
        if let Some((cols, pk)) = self.pk_cache.get(table) {
            if cols == columns {
                return Ok(pk.clone());
            }
        }
        let mut conn = source::connect(&self.cfg.source_opts).await?;
        let pk = source::primary_key(&mut conn, &self.cfg.database, table).await?;
        // Closing politely is best effort; the server drops the session either way.
        let _ = conn.disconnect().await;
        self.pk_cache
            .insert(table.to_string(), (columns.to_vec(), pk.clone()));
        Ok(pk)
    }

    async fn on_rows(
        &mut self,
        rows: &RowsEventData<'_>,
        file: &str,
        log_pos: u64,
        commit_ts_ms: i64,
    ) -> Result<(), SourceError> {
        let Some(cached) = self.tables.get(&rows.table_id()) else {
            tracing::warn!(
                table_id = rows.table_id(),
                log_pos,
                "rows event without a table map skipped"
            );
            return Ok(());
        };
        let Some(info) = cached.info.clone() else {
            return Ok(());
        };
        let op = match rows {
            RowsEventData::WriteRowsEventV1(_) | RowsEventData::WriteRowsEvent(_) => Op::Insert,
            RowsEventData::UpdateRowsEventV1(_)
            | RowsEventData::UpdateRowsEvent(_)
            | RowsEventData::PartialUpdateRowsEvent(_) => Op::Update,
            RowsEventData::DeleteRowsEventV1(_) | RowsEventData::DeleteRowsEvent(_) => Op::Delete,
        };
        let ctx = RowContext {
            source: &self.cfg.database,
            table: &info,
            partitions: self.cfg.partitions,
            commit_ts_ms,
            captured_at_ms: now_ms(),
        };
        let mut items = Vec::new();
        for (idx, row) in rows.rows(&cached.tme).enumerate() {
            let (before, after) = row.map_err(SourceError::Decode)?;
            let position = Position {
                file: file.to_string(),
                offset: log_pos,
                row: u32::try_from(idx).unwrap_or(u32::MAX),
                snapshot: false,
            };
            if self.last_row.as_ref().is_some_and(|last| &position <= last) {
                continue;
            }
            let before = before.map(|r| binlog_image(&info, r));
            let after = after.map(|r| binlog_image(&info, r));
            items.extend(
                route_change(&ctx, op, before, after, position.clone())
                    .into_iter()
                    .map(routed_item),
            );
            self.last_row = Some(position);
        }
        let n = items.len() as u64;
        for item in items {
            send(&self.tx, item).await?;
        }
        self.state.add_read(n);
        Ok(())
    }
}

/// Whether `a` lies after `b` in the binlog.
/// Offset of the first event in a binlog file (after the 4-byte magic).
const BINLOG_FIRST_EVENT_POS: u64 = 4;

/// The file after `at.file` in `logs` (name, size), when `at` is at or past
/// the end of its file and a later file exists.
fn dead_end_next(logs: &[(String, u64)], at: &BinlogPosition) -> Option<String> {
    let i = logs.iter().position(|(name, _)| *name == at.file)?;
    let (_, size) = &logs[i];
    let (next, _) = logs.get(i + 1)?;
    (at.pos >= *size).then(|| next.clone())
}

pub fn is_after(a: &BinlogPosition, b: &BinlogPosition) -> bool {
    (a.file_seq(), a.pos) > (b.file_seq(), b.pos)
}

fn binlog_image(info: &TableInfo, mut row: BinlogRow) -> Row {
    let names: Vec<String> = row
        .columns_ref()
        .iter()
        .map(|c| c.name_str().into_owned())
        .collect();
    let mut image = Row::new();
    for (i, name) in names.into_iter().enumerate() {
        let value = match (info.index_of(&name), row.take(i)) {
            (Some(j), Some(v)) => convert_binlog(&info.columns[j].kind, v),
            (None, Some(v)) => convert_binlog(&ColumnKind::Text(TextEncoding::Utf8), v),
            (_, None) => Value::Null,
        };
        image.insert(name, value);
    }
    image
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_position_at_the_end_of_a_file_with_a_successor_is_a_dead_end() {
        let logs = vec![
            ("binlog.000006".to_string(), 28_091_064),
            ("binlog.000007".to_string(), 4_096),
        ];
        let at = |file: &str, pos: u64| BinlogPosition {
            file: file.into(),
            pos,
        };
        assert_eq!(
            dead_end_next(&logs, &at("binlog.000006", 28_091_064)),
            Some("binlog.000007".to_string())
        );
        // Not at the end yet, the last file, or a file the source does not list.
        assert_eq!(dead_end_next(&logs, &at("binlog.000006", 1_000)), None);
        assert_eq!(dead_end_next(&logs, &at("binlog.000007", 4_096)), None);
        assert_eq!(dead_end_next(&logs, &at("binlog.000003", 4)), None);
    }

    #[test]
    fn positions_compare_by_file_number_then_offset() {
        let p = |f: &str, pos| BinlogPosition {
            file: f.into(),
            pos,
        };
        assert!(is_after(
            &p("binlog.000002", 4),
            &p("binlog.000001", 99_999)
        ));
        assert!(is_after(&p("binlog.000001", 500), &p("binlog.000001", 499)));
        assert!(!is_after(
            &p("binlog.000001", 500),
            &p("binlog.000001", 500)
        ));
    }
}
