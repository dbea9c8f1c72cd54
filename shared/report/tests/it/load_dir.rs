//! Loading a reports directory: valid files kept, invalid ones explained.

use mdp_report::{ColumnRole, ReportError, ReportSet, TenantColumns};
use std::collections::BTreeSet;

#[test]
fn loads_valid_reports_and_explains_rejections() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let write = |name: &str, sql: &str| {
        std::fs::write(dir.path().join(name), sql).unwrap_or_else(|e| panic!("{e}"));
    };
    write(
        "orders_daily.sql",
        "-- orders and GMV per merchant and day\nSELECT merchant_id, DATE(created_at) AS day,\n       COUNT(*) AS orders, SUM(amount) AS gmv\nFROM orders\nGROUP BY merchant_id, day\n",
    );
    write(
        "items_by_product.sql",
        "SELECT merchant_id, product_id, SUM(qty) AS qty FROM order_items GROUP BY merchant_id, product_id",
    );
    write(
        "category_daily.sql",
        "SELECT i.merchant_id, DATE(o.created_at) AS day, p.category, SUM(i.qty) AS units\nFROM order_items i\nJOIN orders o ON o.id = i.order_id\nLEFT JOIN products p ON p.id = i.product_id\nWHERE o.status IN ('paid', 'shipped')\nGROUP BY i.merchant_id, day, p.category",
    );
    write(
        "by_city.sql",
        "SELECT o.merchant_id, COUNT(*) AS n\nFROM orders o\nRIGHT JOIN merchants m ON m.id = o.merchant_id\nGROUP BY o.merchant_id",
    );
    write(
        "Bad-Name.sql",
        "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id",
    );
    write(
        "top.sql",
        "SELECT merchant_id, COUNT(*) AS n\nFROM orders\nGROUP BY merchant_id\nORDER BY n DESC\nLIMIT 10",
    );
    write("notes.txt", "not a report");
    std::fs::create_dir(dir.path().join("archive.sql")).unwrap_or_else(|e| panic!("{e}"));

    let set = ReportSet::load_dir(dir.path(), &TenantColumns::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let names: Vec<&str> = set.reports().iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        ["category_daily", "items_by_product", "orders_daily"]
    );
    assert_eq!(
        set.tables(),
        BTreeSet::from([
            "order_items".to_string(),
            "orders".to_string(),
            "products".to_string()
        ])
    );
    let joined = set
        .get("category_daily")
        .unwrap_or_else(|| panic!("category_daily missing"));
    assert_eq!(joined.tables, ["order_items", "orders", "products"]);
    assert_eq!(joined.fact_table, "order_items");
    assert!(joined.has_joins());
    let daily = set
        .get("orders_daily")
        .unwrap_or_else(|| panic!("orders_daily missing"));
    let cols: Vec<(&str, ColumnRole)> = daily
        .columns
        .iter()
        .map(|c| (c.name.as_str(), c.role))
        .collect();
    assert_eq!(
        cols,
        [
            ("merchant_id", ColumnRole::Key),
            ("day", ColumnRole::Key),
            ("orders", ColumnRole::Value),
            ("gmv", ColumnRole::Value)
        ]
    );
    assert_eq!((daily.tenant_column, daily.date_column), (Some(0), Some(1)));
    assert!(daily.sql.starts_with("-- orders and GMV"));

    let rejected: Vec<(String, String)> = set
        .rejected()
        .iter()
        .map(|r| {
            let file = r
                .file
                .file_name()
                .map(|f| f.to_string_lossy().into_owned())
                .unwrap_or_default();
            (
                file,
                r.error.replace(&dir.path().display().to_string(), "DIR"),
            )
        })
        .collect();
    assert_eq!(
        rejected,
        [
            (
                "Bad-Name.sql".to_string(),
                "DIR/Bad-Name.sql:0:0: report name \"Bad-Name\" must match [a-z0-9_]+".to_string()
            ),
            (
                "by_city.sql".to_string(),
                "DIR/by_city.sql:3:1: RIGHT JOIN is not supported: put the table whose rows the report counts first in FROM and LEFT JOIN the others".to_string()
            ),
            (
                "top.sql".to_string(),
                "DIR/top.sql:4:1: ORDER BY is not allowed in a report definition: report rows are identified by their key; sort when querying".to_string()
            ),
        ]
    );
}

#[test]
fn an_unreadable_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let missing = dir.path().join("nope");
    let err = ReportSet::load_dir(&missing, &TenantColumns::default()).err();
    match err {
        Some(ReportError::ReadDir { dir: d, .. }) => assert_eq!(d, missing),
        other => panic!("expected ReadDir, got {other:?}"),
    }
}

#[test]
fn the_repository_reports_directory_loads_cleanly() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../reports");
    let mut tenants = TenantColumns::default();
    tenants.per_table.insert("merchants".into(), "id".into());
    let set = ReportSet::load_dir(&dir, &tenants).unwrap_or_else(|e| panic!("{e}"));
    assert!(set.rejected().is_empty(), "{:?}", set.rejected());
}
