//! Where report rows are stored: MySQL table and Redis key names, the row JSON
//! and the results database URL. result-writer writes this layout; query reads it.

use chrono::NaiveDate;
use mdp_types::Value;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;

/// Longest report name: `rpt_` + name must fit MySQL's 64-character identifiers.
pub const MAX_REPORT_NAME_LEN: usize = 60;
/// Longest tenant id the report tables hold (`tenant VARCHAR(64)`).
pub const MAX_TENANT_LEN: usize = 64;
/// Tenant part of the Redis key of reports not keyed by merchant.
pub const NO_TENANT: &str = "_";
/// Field added to each Redis row object: the row's date key or null.
pub const DAY_FIELD: &str = "_day";

/// A report name that is safe to use in table and key names: `[a-z0-9_]+`,
/// at most [`MAX_REPORT_NAME_LEN`] characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReportName(String);

/// A report name outside `[a-z0-9_]{1,60}`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("report name {name:?} is not [a-z0-9_]{{1,60}}")]
pub struct InvalidReportName {
    pub name: String,
}

impl ReportName {
    pub fn parse(name: &str) -> Result<Self, InvalidReportName> {
        let ok = !name.is_empty()
            && name.len() <= MAX_REPORT_NAME_LEN
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if ok {
            Ok(ReportName(name.to_string()))
        } else {
            Err(InvalidReportName {
                name: name.chars().take(80).collect(),
            })
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The MySQL table of the report, `rpt_<name>` (safe to interpolate: the
    /// name is `[a-z0-9_]+`).
    pub fn table(&self) -> String {
        format!("rpt_{}", self.0)
    }

    /// The MySQL table of the global accumulator states of a report not
    /// keyed by merchant, `acc_<name>`.
    pub fn acc_table(&self) -> String {
        format!("acc_{}", self.0)
    }
}

impl fmt::Display for ReportName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `CREATE TABLE IF NOT EXISTS` of the global accumulator states of a
/// report not keyed by merchant, `acc_<name>`: one row per group, the
/// merged state of every partition's deltas (NULL once the group is empty).
pub fn create_acc_table_sql(report: &ReportName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{}` (\
         key_hash BINARY(32) NOT NULL PRIMARY KEY, \
         state LONGBLOB NULL, \
         updated_at DATETIME(3) NOT NULL\
         ) ENGINE=InnoDB",
        report.acc_table()
    )
}

/// `CREATE TABLE IF NOT EXISTS` of a report table.
pub fn create_report_table_sql(report: &ReportName) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS `{}` (\
         key_hash BINARY(32) NOT NULL PRIMARY KEY, \
         key_text TEXT NOT NULL, \
         tenant VARCHAR(64) NULL, \
         day DATE NULL, \
         row_json LONGTEXT NOT NULL, \
         version_partition INT NOT NULL, \
         version_window BIGINT NOT NULL, \
         updated_at DATETIME(3) NOT NULL, \
         INDEX idx_tenant_day (tenant, day), \
         INDEX idx_day (day)\
         ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin",
        report.table()
    )
}

/// `CREATE TABLE IF NOT EXISTS` of the applied-version table.
pub const CREATE_APPLIED_TABLE: &str = "CREATE TABLE IF NOT EXISTS mdp_applied (\
     `partition` INT NOT NULL PRIMARY KEY, \
     window_id BIGINT NOT NULL, \
     applied_at DATETIME(3) NOT NULL, \
     max_commit_ts_ms BIGINT NOT NULL, \
     min_captured_at_ms BIGINT NOT NULL\
     ) ENGINE=InnoDB";

/// `CREATE TABLE IF NOT EXISTS` of the stale-cache marks. `gen` grows each
/// time an entry is marked again, so a rebuild only clears the mark it read.
pub const CREATE_STALE_TABLE: &str = "CREATE TABLE IF NOT EXISTS mdp_cache_stale (\
     report VARCHAR(64) NOT NULL, \
     tenant VARCHAR(64) NOT NULL, \
     gen BIGINT NOT NULL, \
     marked_at DATETIME(3) NOT NULL, \
     PRIMARY KEY (report, tenant)\
     ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin";

/// SHA-256 of a row's key text: the primary key of report tables.
pub fn key_hash(key_text: &str) -> [u8; 32] {
    Sha256::digest(key_text.as_bytes()).into()
}

/// The JSON object of a report row, `{"column": value, …}` in select order.
/// Built as text so the column order is kept (a JSON map would sort it).
/// Integers stay JSON integers ([`Value::to_json`]).
pub fn row_json<'a>(columns: impl IntoIterator<Item = &'a str>, values: &[Value]) -> String {
    let mut out = String::with_capacity(16 * values.len() + 2);
    out.push('{');
    for (i, (name, value)) in columns.into_iter().zip(values).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, name);
        out.push(':');
        out.push_str(&value.to_json().to_string());
    }
    out.push('}');
    out
}

/// The Redis form of a row: `row_json` with a trailing `"_day"` field.
pub fn cache_json(row_json: &str, day: Option<&str>) -> String {
    let body = row_json.trim_end();
    let body = body.strip_suffix('}').unwrap_or(body);
    let mut out = String::with_capacity(body.len() + 24);
    out.push_str(body);
    if body.trim_end() != "{" {
        out.push(',');
    }
    push_json_string(&mut out, DAY_FIELD);
    out.push(':');
    match day {
        Some(d) => push_json_string(&mut out, d),
        None => out.push_str("null"),
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::String(s.to_string()).to_string());
}

/// Canonical `YYYY-MM-DD` of a day.
pub fn day_text(day: NaiveDate) -> String {
    day.format("%Y-%m-%d").to_string()
}

/// Names of the keys the platform keeps in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisKeys {
    prefix: String,
}

impl RedisKeys {
    pub fn new(prefix: &str) -> Self {
        RedisKeys {
            prefix: prefix.to_string(),
        }
    }

    /// Hash of one report's rows of one tenant: field = key text, value =
    /// [`cache_json`]. `None` (reports not keyed by merchant) uses `_`.
    pub fn report_hash(&self, report: &ReportName, tenant: Option<&str>) -> String {
        format!(
            "{}:rpt:{}:t:{}",
            self.prefix,
            report,
            tenant.unwrap_or(NO_TENANT)
        )
    }

    /// Hash: partition → [`Freshness`] JSON.
    pub fn freshness(&self) -> String {
        format!("{}:freshness", self.prefix)
    }

    /// Set of report hashes known to be stale (being rebuilt from MySQL);
    /// readers must not serve them.
    pub fn stale_set(&self) -> String {
        format!("{}:stale", self.prefix)
    }

    /// Set by result-writer once the cache is complete; its absence means
    /// Redis lost its data and the cache must be rebuilt.
    pub fn cache_epoch(&self) -> String {
        format!("{}:writer:cache_epoch", self.prefix)
    }
}

/// What the freshness hash holds per partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freshness {
    /// Last window applied (or cached, while MySQL is down).
    pub window_id: u64,
    /// Latest source commit time covered, ms.
    pub max_commit_ts_ms: i64,
    /// When it was applied, ms.
    pub applied_at_ms: i64,
}

/// The results database URL split into the server URL (no database) and the
/// database name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResultsDatabase {
    pub server_url: String,
    pub database: String,
}

/// Why `[results] url` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultsUrlError {
    #[error("results.url must name a database (mysql://…/DB)")]
    MissingDatabase,
    #[error("results.url database name {0:?} is not [A-Za-z0-9_]{{1,64}}")]
    InvalidDatabase(String),
}

impl ResultsDatabase {
    pub fn from_url(url: &str) -> Result<Self, ResultsUrlError> {
        let (scheme, rest) = match url.split_once("://") {
            Some((s, r)) => (Some(s), r),
            None => (None, url),
        };
        let (authority, path_and_query) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => return Err(ResultsUrlError::MissingDatabase),
        };
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let database = path.trim_end_matches('/');
        if database.is_empty() {
            return Err(ResultsUrlError::MissingDatabase);
        }
        let valid = database.len() <= 64
            && database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(ResultsUrlError::InvalidDatabase(database.to_string()));
        }
        let mut server_url = String::new();
        if let Some(s) = scheme {
            server_url.push_str(s);
            server_url.push_str("://");
        }
        server_url.push_str(authority);
        if let Some(q) = query {
            server_url.push_str("/?");
            server_url.push_str(q);
        }
        Ok(ResultsDatabase {
            server_url,
            database: database.to_string(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn report_names_are_validated() {
        assert_eq!(
            ReportName::parse("orders_daily").unwrap().table(),
            "rpt_orders_daily"
        );
        for bad in ["", "Orders", "a-b", "x;drop", "a b", "é", &"a".repeat(61)] {
            assert!(ReportName::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ReportName::parse(&"a".repeat(60)).is_ok());
    }

    #[test]
    fn row_json_keeps_select_order_and_integers() {
        let values = vec![
            Value::I(7),
            Value::S("2026-11-21".into()),
            Value::I(3),
            Value::D("1250.50".parse().unwrap()),
        ];
        let text = row_json(["merchant_id", "day", "orders", "gmv"], &values);
        assert_eq!(
            text,
            r#"{"merchant_id":7,"day":"2026-11-21","orders":3,"gmv":1250.5}"#
        );
        assert_eq!(
            cache_json(&text, Some("2026-11-21")),
            r#"{"merchant_id":7,"day":"2026-11-21","orders":3,"gmv":1250.5,"_day":"2026-11-21"}"#
        );
        assert_eq!(cache_json("{}", None), r#"{"_day":null}"#);
        assert_eq!(row_json(["a\"b"], &[Value::Null]), r#"{"a\"b":null}"#);
    }

    #[test]
    fn redis_keys() {
        let k = RedisKeys::new("mdp");
        let r = ReportName::parse("gmv").unwrap();
        assert_eq!(k.report_hash(&r, Some("42")), "mdp:rpt:gmv:t:42");
        assert_eq!(k.report_hash(&r, None), "mdp:rpt:gmv:t:_");
        assert_eq!(k.freshness(), "mdp:freshness");
    }

    #[test]
    fn results_url_is_split() {
        let db = ResultsDatabase::from_url("mysql://root@127.0.0.1:3306/mdp_results").unwrap();
        assert_eq!(db.server_url, "mysql://root@127.0.0.1:3306");
        assert_eq!(db.database, "mdp_results");
        let db = ResultsDatabase::from_url("mysql://u:p@h:1/res?ssl-mode=disabled").unwrap();
        assert_eq!(db.server_url, "mysql://u:p@h:1/?ssl-mode=disabled");
        assert_eq!(db.database, "res");
        assert_eq!(
            ResultsDatabase::from_url("mysql://h:1"),
            Err(ResultsUrlError::MissingDatabase)
        );
        assert!(matches!(
            ResultsDatabase::from_url("mysql://h:1/a`b"),
            Err(ResultsUrlError::InvalidDatabase(_))
        ));
    }

    #[test]
    fn key_hash_is_sha256() {
        let h = key_hash("7\u{1f}2026-11-21");
        assert_eq!(h.len(), 32);
        assert_eq!(h, key_hash("7\u{1f}2026-11-21"));
        assert_ne!(h, key_hash("7\u{1f}2026-11-22"));
    }
}
