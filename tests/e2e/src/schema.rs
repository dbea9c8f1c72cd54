//! The demo shop schema: the business tables a merchant's transactional system
//! keeps, which the platform captures from the binlog and reports over.
//!
//! Every table carries the tenant column `merchant_id` except `merchants`,
//! whose tenant column is its `id` (see `[source.tenant_columns]` in
//! `config/default.toml`). Money is integer cents. `orders.status` is a
//! `VARCHAR` with a `CHECK` rather than an `ENUM`, so the binlog carries the
//! text and not the enum index.

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::{AssertSqlSafe, Row};
use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

/// Database name used when a URL names none.
pub const DEFAULT_DATABASE: &str = "shop";

/// The shop tables, dimension tables first.
pub const TABLES: [&str; 4] = ["merchants", "products", "orders", "order_items"];

/// Every value `orders.status` can take, in lifecycle order.
pub const ORDER_STATUSES: [&str; 5] = ["cart", "paid", "shipped", "refunded", "cancelled"];

/// `CREATE TABLE IF NOT EXISTS` statements, in the order of [`TABLES`].
pub const DDL: [&str; 4] = [
    "CREATE TABLE IF NOT EXISTS merchants (
        id BIGINT NOT NULL PRIMARY KEY,
        name VARCHAR(100) NOT NULL,
        city VARCHAR(64) NOT NULL,
        created_at DATETIME NOT NULL
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS products (
        id BIGINT NOT NULL PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        name VARCHAR(100) NOT NULL,
        category VARCHAR(32) NOT NULL,
        price_cents BIGINT NOT NULL,
        KEY idx_products_merchant (merchant_id)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS orders (
        id BIGINT NOT NULL PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        customer_id BIGINT NOT NULL,
        status VARCHAR(16) NOT NULL,
        amount_cents BIGINT NOT NULL DEFAULT 0,
        refund_cents BIGINT NOT NULL DEFAULT 0,
        created_at DATETIME NOT NULL,
        updated_at DATETIME NOT NULL,
        KEY idx_orders_merchant_created (merchant_id, created_at),
        KEY idx_orders_created (created_at),
        CONSTRAINT chk_orders_status
            CHECK (status IN ('cart', 'paid', 'shipped', 'refunded', 'cancelled'))
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS order_items (
        id BIGINT NOT NULL PRIMARY KEY,
        merchant_id BIGINT NOT NULL,
        order_id BIGINT NOT NULL,
        product_id BIGINT NOT NULL,
        qty INT NOT NULL,
        price_cents BIGINT NOT NULL,
        created_at DATETIME NOT NULL,
        KEY idx_items_order (order_id),
        KEY idx_items_merchant_created (merchant_id, created_at)
    ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
];

/// Errors creating or inspecting the shop database.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    #[error("invalid database name {0:?}: use letters, digits and '_'")]
    InvalidDatabaseName(String),
    #[error("database error while {step}")]
    Sql {
        step: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

fn sql_err(step: &'static str) -> impl FnOnce(sqlx::Error) -> SchemaError {
    move |source| SchemaError::Sql { step, source }
}

/// A `mysql://` URL split into the server part and the database it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbUrl {
    /// The URL without the database path (query string kept).
    pub server: String,
    /// The database named by the URL, if any.
    pub database: Option<String>,
}

impl DbUrl {
    /// Splits `mysql://user:pw@host:port/db?opts` into server and database.
    pub fn parse(url: &str) -> Result<Self, SchemaError> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            SchemaError::InvalidUrl("expected mysql://host[:port]/database".into())
        })?;
        if scheme != "mysql" && scheme != "mariadb" {
            return Err(SchemaError::InvalidUrl(format!(
                "unsupported scheme {scheme:?}"
            )));
        }
        let (before_query, query) = match rest.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match before_query.split_once('/') {
            Some((a, p)) => (a, p),
            None => (before_query, ""),
        };
        if authority.is_empty() {
            return Err(SchemaError::InvalidUrl("missing host".into()));
        }
        let database = path.trim_matches('/');
        let database = (!database.is_empty()).then(|| database.to_string());
        let mut server = format!("mysql://{authority}/");
        if let Some(q) = query {
            server.push('?');
            server.push_str(q);
        }
        Ok(DbUrl { server, database })
    }

    /// The database, or [`DEFAULT_DATABASE`].
    pub fn database_or_default(&self) -> &str {
        self.database.as_deref().unwrap_or(DEFAULT_DATABASE)
    }

    /// Connect options for the server (no database selected).
    pub fn server_options(&self) -> Result<MySqlConnectOptions, SchemaError> {
        MySqlConnectOptions::from_str(&self.server)
            .map_err(|e| SchemaError::InvalidUrl(e.to_string()))
    }

    /// Connect options for the database (the default one when the URL names none).
    pub fn database_options(&self) -> Result<MySqlConnectOptions, SchemaError> {
        Ok(self.server_options()?.database(self.database_or_default()))
    }
}

fn check_identifier(name: &str) -> Result<(), SchemaError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(SchemaError::InvalidDatabaseName(name.to_string()))
    }
}

/// Opens a pool on the database named by `url` (or [`DEFAULT_DATABASE`]).
pub async fn connect(url: &str, max_connections: u32) -> Result<MySqlPool, SchemaError> {
    let url = DbUrl::parse(url)?;
    MySqlPoolOptions::new()
        .max_connections(max_connections.max(1))
        .acquire_timeout(Duration::from_secs(30))
        .connect_with(url.database_options()?)
        .await
        .map_err(sql_err("connecting to the shop database"))
}

/// Creates the database named by `url` if missing, then the shop tables if
/// missing, and returns a pool on it. Idempotent.
pub async fn create(url: &str, max_connections: u32) -> Result<MySqlPool, SchemaError> {
    let parsed = DbUrl::parse(url)?;
    let db = parsed.database_or_default().to_string();
    check_identifier(&db)?;
    {
        let server = MySqlPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(parsed.server_options()?)
            .await
            .map_err(sql_err("connecting to the server"))?;
        // The name is checked above: letters, digits and '_' only.
        let stmt = format!("CREATE DATABASE IF NOT EXISTS `{db}` DEFAULT CHARACTER SET utf8mb4");
        sqlx::query(AssertSqlSafe(stmt))
            .execute(&server)
            .await
            .map_err(sql_err("creating the database"))?;
        server.close().await;
    }
    let pool = connect(url, max_connections).await?;
    create_tables(&pool).await?;
    Ok(pool)
}

/// Creates the shop tables if missing. Idempotent.
pub async fn create_tables(pool: &MySqlPool) -> Result<(), SchemaError> {
    for ddl in DDL {
        sqlx::query(ddl)
            .execute(pool)
            .await
            .map_err(sql_err("creating the shop tables"))?;
    }
    Ok(())
}

/// Drops the database named by `url` if it exists (for tests).
pub async fn drop_database(url: &str) -> Result<(), SchemaError> {
    let parsed = DbUrl::parse(url)?;
    let db = parsed.database_or_default().to_string();
    check_identifier(&db)?;
    let server = MySqlPoolOptions::new()
        .max_connections(1)
        .connect_with(parsed.server_options()?)
        .await
        .map_err(sql_err("connecting to the server"))?;
    sqlx::query(AssertSqlSafe(format!("DROP DATABASE IF EXISTS `{db}`")))
        .execute(&server)
        .await
        .map_err(sql_err("dropping the database"))?;
    server.close().await;
    Ok(())
}

/// Row count of every shop table.
pub async fn row_counts(pool: &MySqlPool) -> Result<BTreeMap<String, i64>, SchemaError> {
    let mut counts = BTreeMap::new();
    for (table, sql) in [
        ("merchants", "SELECT COUNT(*) AS n FROM merchants"),
        ("products", "SELECT COUNT(*) AS n FROM products"),
        ("orders", "SELECT COUNT(*) AS n FROM orders"),
        ("order_items", "SELECT COUNT(*) AS n FROM order_items"),
    ] {
        let row = sqlx::query(sql)
            .fetch_one(pool)
            .await
            .map_err(sql_err("counting rows"))?;
        let n: i64 = row.try_get("n").map_err(sql_err("counting rows"))?;
        counts.insert(table.to_string(), n);
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_is_split_into_server_and_database() {
        let u = DbUrl::parse("mysql://root@127.0.0.1:3307/shop").expect("valid");
        assert_eq!(u.server, "mysql://root@127.0.0.1:3307/");
        assert_eq!(u.database.as_deref(), Some("shop"));

        let u = DbUrl::parse("mysql://u:p@h:1/db_2?ssl-mode=disabled").expect("valid");
        assert_eq!(u.server, "mysql://u:p@h:1/?ssl-mode=disabled");
        assert_eq!(u.database.as_deref(), Some("db_2"));

        let u = DbUrl::parse("mysql://root@127.0.0.1:3307").expect("valid");
        assert_eq!(u.database, None);
        assert_eq!(u.database_or_default(), "shop");
    }

    #[test]
    fn bad_urls_and_names_are_rejected() {
        assert!(matches!(
            DbUrl::parse("127.0.0.1:3306/shop"),
            Err(SchemaError::InvalidUrl(_))
        ));
        assert!(matches!(
            DbUrl::parse("postgres://h/db"),
            Err(SchemaError::InvalidUrl(_))
        ));
        assert!(matches!(
            DbUrl::parse("mysql:///db"),
            Err(SchemaError::InvalidUrl(_))
        ));
        assert!(check_identifier("shop_1").is_ok());
        assert!(matches!(
            check_identifier("shop`; DROP"),
            Err(SchemaError::InvalidDatabaseName(_))
        ));
    }

    /// The demo reports in the repository's `reports/` load without rejection,
    /// read only shop tables and are keyed by merchant (except `city_daily`,
    /// across merchants) and day.
    #[test]
    fn demo_reports_are_valid_over_this_schema() {
        let settings = mdp_config::Settings::load_from(None, Vec::new()).expect("defaults load");
        let tenants = mdp_report::TenantColumns::from_settings(&settings.source);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports");
        let set = mdp_report::ReportSet::load_dir(&dir, &tenants).expect("reports dir readable");
        assert!(set.rejected().is_empty(), "rejected: {:?}", set.rejected());
        let names: Vec<&str> = set.reports().iter().map(|r| r.name.as_str()).collect();
        for expected in [
            "merchant_daily_items",
            "merchant_daily_orders",
            "merchant_hourly_orders",
        ] {
            assert!(
                names.contains(&expected),
                "{expected} missing from {names:?}"
            );
        }
        for report in set.reports() {
            assert!(
                TABLES.contains(&report.fact_table.as_str()),
                "{}: {}",
                report.name,
                report.fact_table
            );
            let tenant = report
                .tenant_column
                .map(|i| report.columns[i].name.as_str());
            // Reports across merchants (per city) have no tenant column.
            let expected = (report.name != "city_daily").then_some("merchant_id");
            assert_eq!(
                tenant, expected,
                "{} is keyed by merchant unless it spans merchants",
                report.name
            );
            let day = report.date_column.map(|i| report.columns[i].name.as_str());
            assert_eq!(day, Some("day"), "{} has a date key", report.name);
        }
    }

    #[test]
    fn ddl_covers_every_table_and_status() {
        for (table, ddl) in TABLES.iter().zip(DDL) {
            assert!(
                ddl.contains(&format!("CREATE TABLE IF NOT EXISTS {table} (")),
                "{table}"
            );
        }
        for status in ORDER_STATUSES {
            assert!(DDL[2].contains(&format!("'{status}'")), "{status}");
        }
    }
}
