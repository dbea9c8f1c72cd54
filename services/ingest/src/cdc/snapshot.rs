//! The consistent initial snapshot: every captured row as of one binlog
//! position, preceded by a `Reset` per table and partition so a snapshot
//! redone after a crash replaces whatever an interrupted one delivered.

use super::events::{reset_event, route_change, Routed, RowContext};
use super::schema::{quote_ident, TableInfo};
use super::source::{self, Flavor, SourceError};
use super::CdcItem;
use crate::configuration::IngestConfig;
use crate::store::BinlogPosition;
use mdp_types::{now_ms, Op, Position, Row};
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row as MyRow};
use tokio::sync::mpsc::Sender;

/// Sends one item, failing when the publisher is gone.
pub(crate) async fn send(tx: &Sender<CdcItem>, item: CdcItem) -> Result<(), SourceError> {
    tx.send(item).await.map_err(|_| SourceError::PublisherGone)
}

/// Takes the snapshot and sends its items; the last item is the boundary
/// (the snapshot's binlog position), which is also returned.
#[tracing::instrument(skip_all, fields(database = %cfg.database))]
pub async fn take_snapshot(
    cfg: &IngestConfig,
    tx: &Sender<CdcItem>,
    on_rows: &dyn Fn(u64),
) -> Result<BinlogPosition, SourceError> {
    let mut conn = source::connect(&cfg.source_opts).await?;
    source::check_binlog_settings(&mut conn).await?;
    let flavor = source::flavor(&mut conn).await?;
    let collations = source::collations(&mut conn).await?;
    // TIMESTAMP columns come out in UTC, as the binlog carries them.
    conn.query_drop("SET SESSION time_zone = '+00:00'")
        .await
        .map_err(SourceError::query("session time zone"))?;
    conn.query_drop("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        .await
        .map_err(SourceError::query("isolation level"))?;
    let start = consistent_start(&mut conn, flavor).await?;
    tracing::info!(position = %start, ?flavor, "snapshot started");

    let now = now_ms();
    let mut next_row: u32 = 0;
    let position = |next_row: &mut u32| -> Result<Position, SourceError> {
        let p = Position {
            file: start.file.clone(),
            offset: start.pos,
            row: *next_row,
            snapshot: true,
        };
        *next_row = next_row.checked_add(1).ok_or_else(|| {
            SourceError::Misconfigured("snapshot holds more than 2^32 rows".into())
        })?;
        Ok(p)
    };

    let existing = existing_tables(&mut conn, cfg).await?;
    for p in 0..cfg.partitions {
        for table in &cfg.tables {
            let pos = position(&mut next_row)?;
            send(
                tx,
                CdcItem::Event(reset_event(&cfg.database, table, p, pos, now)),
            )
            .await?;
        }
    }

    let mut total = 0u64;
    for table in &cfg.tables {
        if !existing.contains(table) {
            tracing::warn!(table = %table, "captured table does not exist in the source, nothing to snapshot");
            continue;
        }
        let pk = source::primary_key(&mut conn, &cfg.database, table).await?;
        let sql = format!(
            "SELECT * FROM {}.{}",
            quote_ident(&cfg.database),
            quote_ident(table)
        );
        let mut result = conn
            .exec_iter(sql, ())
            .await
            .map_err(SourceError::query("snapshot select"))?;
        let info = TableInfo::from_result_columns(
            table,
            result.columns_ref(),
            &collations,
            cfg.tenant_column_of(table),
            &pk,
        );
        let mut rows = 0u64;
        while let Some(row) = result
            .next()
            .await
            .map_err(SourceError::query("snapshot row"))?
        {
            let image = row_image(&info, row);
            let ctx = RowContext {
                source: &cfg.database,
                table: &info,
                partitions: cfg.partitions,
                commit_ts_ms: now,
                captured_at_ms: now_ms(),
            };
            for routed in route_change(
                &ctx,
                Op::Snapshot,
                None,
                Some(image),
                position(&mut next_row)?,
            ) {
                send(tx, routed_item(routed)).await?;
            }
            rows += 1;
            if rows.is_multiple_of(1024) {
                on_rows(1024);
            }
        }
        on_rows(rows % 1024);
        total += rows;
        tracing::info!(table = %table, rows, "table snapshot read");
    }
    conn.query_drop("COMMIT")
        .await
        .map_err(SourceError::query("snapshot commit"))?;
    send(tx, CdcItem::Boundary(start.clone())).await?;
    tracing::info!(position = %start, rows = total, "snapshot read completely");
    Ok(start)
}

/// Converts a routed event into the item the publisher takes.
pub(crate) fn routed_item(routed: Routed) -> CdcItem {
    match routed {
        Routed::Event(e) => CdcItem::Event(e),
        Routed::Rejected { event, reason } => {
            crate::metrics::RowRejected {
                event: &event,
                reason,
            }
            .emit();
            CdcItem::Rejected { event, reason }
        }
    }
}

fn row_image(info: &TableInfo, row: MyRow) -> Row {
    let mut image = Row::new();
    for (col, value) in info.columns.iter().zip(row.unwrap_raw()) {
        let v = value
            .map(|v| col.kind.convert(v))
            .unwrap_or(mdp_types::Value::Null);
        image.insert(col.name.clone(), v);
    }
    image
}

/// Opens a transaction whose reads are consistent with a binlog position and returns that position.
async fn consistent_start(conn: &mut Conn, flavor: Flavor) -> Result<BinlogPosition, SourceError> {
    match flavor {
        Flavor::MariaDb => {
            conn.query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await
                .map_err(SourceError::query("start consistent snapshot"))?;
            let rows: Vec<(String, String)> = conn
                .query("SHOW STATUS LIKE 'binlog_snapshot_%'")
                .await
                .map_err(SourceError::query("binlog snapshot status"))?;
            let get = |name: &str| {
                rows.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.clone())
            };
            let file = get("binlog_snapshot_file").filter(|f| !f.is_empty());
            let pos = get("binlog_snapshot_position").and_then(|p| p.parse::<u64>().ok());
            match (file, pos) {
                (Some(file), Some(pos)) => Ok(BinlogPosition { file, pos }),
                _ => Err(SourceError::Misconfigured(
                    "binlog_snapshot_file/position unavailable (is log_bin on?)".into(),
                )),
            }
        }
        Flavor::MySql => {
            conn.query_drop("FLUSH TABLES WITH READ LOCK")
                .await
                .map_err(SourceError::query("read lock"))?;
            let pos = source::master_status(conn).await;
            let started = conn
                .query_drop("START TRANSACTION WITH CONSISTENT SNAPSHOT")
                .await;
            conn.query_drop("UNLOCK TABLES")
                .await
                .map_err(SourceError::query("unlock tables"))?;
            started.map_err(SourceError::query("start consistent snapshot"))?;
            pos
        }
    }
}

async fn existing_tables(
    conn: &mut Conn,
    cfg: &IngestConfig,
) -> Result<std::collections::BTreeSet<String>, SourceError> {
    let names: Vec<String> = conn
        .exec(
            "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = ?",
            (cfg.database.as_str(),),
        )
        .await
        .map_err(SourceError::query("table list"))?;
    Ok(names.into_iter().collect())
}
