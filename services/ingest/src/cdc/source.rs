//! Queries against the source server: flavour, binlog settings, binlog
//! positions, primary keys, and the replication lag computation.

use crate::store::BinlogPosition;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Row};

/// Errors talking to the source database.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("failed to connect to the source database")]
    Connect(#[source] mysql_async::Error),
    #[error("source query failed: {what}")]
    Query {
        what: &'static str,
        #[source]
        source: mysql_async::Error,
    },
    #[error("source binlog is not usable: {0}")]
    Misconfigured(String),
    #[error("binlog stream failed")]
    Stream(#[source] mysql_async::Error),
    #[error("binlog event could not be decoded")]
    Decode(#[source] std::io::Error),
    #[error("binlog stream closed by the source")]
    Closed,
    #[error("no binlog event or heartbeat within {0} s")]
    Silent(u64),
    #[error("binlog file {file} ended without a rotate event; the stream continues with {next}")]
    FileEnded { file: String, next: String },
    #[error(transparent)]
    Schema(#[from] super::schema::SchemaError),
    #[error("the publisher stopped")]
    PublisherGone,
}

impl SourceError {
    pub fn query(what: &'static str) -> impl FnOnce(mysql_async::Error) -> SourceError {
        move |source| SourceError::Query { what, source }
    }
}

/// Server family: the snapshot and status statements differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    MariaDb,
    MySql,
}

/// Opens a connection to the source.
pub async fn connect(opts: &mysql_async::Opts) -> Result<Conn, SourceError> {
    Conn::new(opts.clone()).await.map_err(SourceError::Connect)
}

/// Detects the server family from `VERSION()`.
pub async fn flavor(conn: &mut Conn) -> Result<Flavor, SourceError> {
    let v: Option<String> = conn
        .query_first("SELECT VERSION()")
        .await
        .map_err(SourceError::query("version"))?;
    Ok(
        if v.unwrap_or_default()
            .to_ascii_lowercase()
            .contains("mariadb")
        {
            Flavor::MariaDb
        } else {
            Flavor::MySql
        },
    )
}

/// Checks that the binlog carries full row images with column names.
pub async fn check_binlog_settings(conn: &mut Conn) -> Result<(), SourceError> {
    type SettingsRow = (
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
    );
    let row: Option<SettingsRow> = conn
        .query_first("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
        .await
        .map_err(SourceError::query("binlog settings"))?;
    let (log_bin, format, image, metadata) = row.unwrap_or_default();
    let is = |v: &Option<String>, want: &[&str]| {
        v.as_deref()
            .is_some_and(|v| want.iter().any(|w| v.eq_ignore_ascii_case(w)))
    };
    let mut problems = Vec::new();
    if !is(&log_bin, &["1", "ON"]) {
        problems.push("log_bin is off".to_string());
    }
    if !is(&format, &["ROW"]) {
        problems.push(format!(
            "binlog_format is {} (need ROW)",
            format.unwrap_or_default()
        ));
    }
    if !is(&image, &["FULL"]) {
        problems.push(format!(
            "binlog_row_image is {} (need FULL)",
            image.unwrap_or_default()
        ));
    }
    if !is(&metadata, &["FULL"]) {
        problems.push(format!(
            "binlog_row_metadata is {} (need FULL)",
            metadata.unwrap_or_default()
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(SourceError::Misconfigured(problems.join(", ")))
    }
}

/// The current end of the binlog (`SHOW MASTER STATUS`, or `SHOW BINARY LOG
/// STATUS` on MySQL 8.4+).
pub async fn master_status(conn: &mut Conn) -> Result<BinlogPosition, SourceError> {
    let row: Option<Row> = match conn.query_first("SHOW MASTER STATUS").await {
        Ok(r) => r,
        Err(_) => conn
            .query_first("SHOW BINARY LOG STATUS")
            .await
            .map_err(SourceError::query("master status"))?,
    };
    let row = row.ok_or_else(|| {
        SourceError::Misconfigured("binary logging is off (no master status)".into())
    })?;
    position_of_row(&row)
        .ok_or_else(|| SourceError::Misconfigured("unexpected master status row".into()))
}

fn position_of_row(row: &Row) -> Option<BinlogPosition> {
    let file: String = row.get_opt(0)?.ok()?;
    let pos: u64 = row.get_opt(1)?.ok()?;
    Some(BinlogPosition { file, pos })
}

/// The binlog files and their sizes (`SHOW BINARY LOGS`).
pub async fn binary_logs(conn: &mut Conn) -> Result<Vec<(String, u64)>, SourceError> {
    let rows: Vec<Row> = conn
        .query("SHOW BINARY LOGS")
        .await
        .map_err(SourceError::query("binary logs"))?;
    Ok(rows
        .iter()
        .filter_map(|r| {
            Some((
                r.get_opt::<String, _>(0)?.ok()?,
                r.get_opt::<u64, _>(1)?.ok()?,
            ))
        })
        .collect())
}

/// The server's collations with their character sets, for decoding strings.
pub async fn collations(conn: &mut Conn) -> Result<super::convert::Collations, SourceError> {
    let rows: Vec<(Option<u64>, Option<String>)> = conn
        .query("SELECT ID, CHARACTER_SET_NAME FROM information_schema.COLLATIONS")
        .await
        .map_err(SourceError::query("collations"))?;
    let list = rows
        .into_iter()
        .filter_map(|(id, cs)| Some((u16::try_from(id?).ok()?, cs?)));
    Ok(super::convert::Collations::default().with_server_list(list))
}

/// Primary-key column names of `db.table`, in key order.
pub async fn primary_key(
    conn: &mut Conn,
    db: &str,
    table: &str,
) -> Result<Vec<String>, SourceError> {
    conn.exec(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE \
         WHERE TABLE_SCHEMA = ? AND TABLE_NAME = ? AND CONSTRAINT_NAME = 'PRIMARY' \
         ORDER BY ORDINAL_POSITION",
        (db, table),
    )
    .await
    .map_err(SourceError::query("primary key"))
}

/// Bytes of binlog between `from` and the server's current end `to`, given
/// the file list with sizes. Zero when `from` is at or past `to`.
pub fn lag_bytes(from: &BinlogPosition, to: &BinlogPosition, logs: &[(String, u64)]) -> u64 {
    if from.file == to.file || from.file_seq() >= to.file_seq() {
        return if from.file == to.file {
            to.pos.saturating_sub(from.pos)
        } else {
            0
        };
    }
    let mut lag = 0u64;
    for (name, size) in logs {
        let seq = BinlogPosition {
            file: name.clone(),
            pos: 0,
        }
        .file_seq();
        if seq == from.file_seq() {
            lag += size.saturating_sub(from.pos);
        } else if seq > from.file_seq() && seq < to.file_seq() {
            // Each file starts with a 4-byte magic number that carries no events.
            lag += size.saturating_sub(4);
        }
    }
    lag + to.pos.saturating_sub(4)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(file: &str, pos: u64) -> BinlogPosition {
        BinlogPosition {
            file: file.into(),
            pos,
        }
    }

    #[test]
    fn lag_within_one_file() {
        assert_eq!(
            lag_bytes(&p("binlog.000003", 100), &p("binlog.000003", 350), &[]),
            250
        );
        assert_eq!(
            lag_bytes(&p("binlog.000003", 400), &p("binlog.000003", 350), &[]),
            0
        );
    }

    #[test]
    fn lag_across_files_adds_the_rest_of_each_file() {
        let logs = vec![
            ("binlog.000001".to_string(), 1000),
            ("binlog.000002".to_string(), 500),
            ("binlog.000003".to_string(), 300),
        ];
        // 1000-900 in file 1, 500-4 in file 2, 300-4 in file 3
        assert_eq!(
            lag_bytes(&p("binlog.000001", 900), &p("binlog.000003", 300), &logs),
            100 + 496 + 296
        );
        assert_eq!(
            lag_bytes(&p("binlog.000004", 4), &p("binlog.000003", 300), &logs),
            0
        );
    }
}
