//! A small `orders` table, random change streams over it, and the report
//! definitions the exactness tests run.

use chrono::{NaiveDate, NaiveDateTime};
use mdp_report::{Engine, MemoryStateStore, Report, ReportSet, TenantColumns};
use mdp_types::{ChangeEvent, EventId, Op, Position, ResultRow, Row, TenantId, Value};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

pub const STATUSES: [&str; 4] = ["paid", "new", "cancelled", "refunded"];
/// Spellings equal under `utf8mb4_general_ci` (case, trailing spaces).
pub const CHANNELS: [&str; 5] = ["web", "Web", "WEB ", "app", "App"];

/// The reports both oracles check. Together they cover COUNT(*), COUNT(x),
/// SUM, AVG, MIN, MAX, COUNT(DISTINCT) over integers, decimals, doubles,
/// strings and datetimes, CASE, IF, IFNULL, COALESCE, GREATEST, arithmetic
/// (including `/` and DIV), CAST, CONCAT, LIKE, BETWEEN, IN, HAVING and the
/// date functions DATE, HOUR, EXTRACT, WEEKDAY, DAYOFWEEK, DATE_FORMAT,
/// DATE_ADD and DATE_SUB.
pub const REPORTS: &[(&str, &str)] = &[
    (
        // String functions: positions from either end, lengths from a
        // column, trimming, replacing, joining with a separator.
        "strings",
        "SELECT merchant_id, LEFT(status, 3) AS st3, COUNT(*) AS n,
           MAX(SUBSTRING(status, 2)) AS sub_from2, MIN(SUBSTRING(status, -3, 2)) AS sub_neg,
           MAX(SUBSTR(status, qty, 2)) AS sub_qty, MAX(MID(status, 0)) AS sub_zero,
           MAX(SUBSTRING(status FROM 2 FOR qty)) AS sub_for,
           SUM(CHAR_LENGTH(channel)) AS channel_chars, SUM(LENGTH(amount)) AS amount_len,
           MAX(RIGHT(status, qty)) AS right_qty, MIN(LEFT(status, qty - 1)) AS left_qty,
           MAX(CONCAT_WS('-', status, customer_id, qty)) AS joined,
           MAX(REPLACE(status, 'e', 'E')) AS replaced, MIN(TRIM(LEADING 'c' FROM status)) AS trimmed,
           MAX(TRIM(TRAILING 'd' FROM status)) AS trimmed_end, MAX(TRIM(BOTH 'p' FROM 'ppappp')) AS trim_const,
           COUNT(DISTINCT TRIM(CONCAT('  ', channel, '  '))) AS channels,
           COUNT(DISTINCT LTRIM(CONCAT(' ', channel))) AS lchannels,
           SUM(CHAR_LENGTH(RTRIM(CONCAT(status, '  ')))) AS rtrim_len
         FROM orders GROUP BY merchant_id, LEFT(status, 3)",
    ),
    (
        // Week numbers in every mode, names, month ends and differences,
        // over days spread across two years by the amount.
        "weeks",
        "SELECT merchant_id, WEEK(created_at) AS wk, YEARWEEK(created_at, 3) AS iso_wk,
           DAYNAME(created_at) AS dname, COUNT(*) AS n,
           SUM(WEEK(created_at - INTERVAL FLOOR(amount) DAY, qty)) AS wk_modes_lo,
           SUM(WEEK(created_at - INTERVAL FLOOR(amount) DAY, qty + 4)) AS wk_modes_hi,
           SUM(YEARWEEK(created_at - INTERVAL FLOOR(amount) DAY, qty)) AS yw_lo,
           SUM(YEARWEEK(created_at - INTERVAL FLOOR(amount) DAY, qty + 4)) AS yw_hi,
           COUNT(DISTINCT YEARWEEK(created_at - INTERVAL FLOOR(amount) DAY)) AS yw_default,
           MAX(MONTHNAME(created_at - INTERVAL FLOOR(amount) DAY)) AS last_month_name,
           MIN(LAST_DAY(created_at - INTERVAL FLOOR(amount) DAY)) AS first_month_end,
           SUM(TO_DAYS(created_at - INTERVAL FLOOR(amount) DAY)) AS days_total,
           SUM(DATEDIFF(created_at, created_at - INTERVAL FLOOR(amount) DAY)) AS diff_days,
           SUM(TIMESTAMPDIFF(MONTH, created_at - INTERVAL FLOOR(amount) DAY, created_at)) AS diff_months,
           SUM(TIMESTAMPDIFF(YEAR, created_at, created_at - INTERVAL FLOOR(amount) DAY)) AS diff_years_neg,
           SUM(TIMESTAMPDIFF(MINUTE, created_at - INTERVAL FLOOR(amount) HOUR, created_at)) AS diff_minutes,
           SUM(TIMESTAMPDIFF(QUARTER, DATE(created_at - INTERVAL FLOOR(amount) DAY), created_at)) AS diff_quarters,
           SUM(TIMESTAMPDIFF(WEEK, created_at - INTERVAL qty DAY, created_at)) AS diff_weeks,
           SUM(TIMESTAMPDIFF(SECOND, created_at, created_at - INTERVAL customer_id MINUTE)) AS diff_seconds
         FROM orders GROUP BY merchant_id, WEEK(created_at), YEARWEEK(created_at, 3), DAYNAME(created_at)",
    ),
    (
        // A local day and hour eight hours ahead of the stored time.
        "shifted",
        "SELECT merchant_id, DATE(DATE_ADD(created_at, INTERVAL 8 HOUR)) AS local_day,
           HOUR(DATE_ADD(created_at, INTERVAL 8 HOUR)) AS local_hour, COUNT(*) AS n, SUM(amount) AS gmv,
           MIN(DATE_SUB(created_at, INTERVAL 90 MINUTE)) AS first_less_90m,
           MAX(DATE_ADD(DATE(created_at), INTERVAL 1 MONTH)) AS month_later,
           MAX(DATE_SUB(created_at, INTERVAL qty DAY)) AS less_qty_days,
           COUNT(DISTINCT ADDDATE(DATE(created_at), 7)) AS weeks_later,
           MIN(DATE_ADD(created_at, INTERVAL -2 WEEK)) AS two_weeks_back,
           MAX(SUBDATE(DATE(created_at), INTERVAL 1 YEAR)) AS year_back,
           MIN(created_at - INTERVAL 90 MINUTE) AS op_less_90m,
           MAX(INTERVAL 1 MONTH + DATE(created_at)) AS op_month_later,
           COUNT(DISTINCT created_at + INTERVAL qty HOUR) AS op_plus_qty_hours,
           SUM(TIMESTAMPDIFF(SECOND, '2000-01-01 00:00:00',
             CONVERT_TZ(created_at - INTERVAL FLOOR(amount) * 40 DAY, '+00:00', '+08:00'))) AS tz_back,
           SUM(TIMESTAMPDIFF(SECOND, '2000-01-01 00:00:00',
             CONVERT_TZ(created_at + INTERVAL FLOOR(amount) * 20 DAY, '+05:30', '-3:00'))) AS tz_ahead,
           MAX(CONVERT_TZ(DATE(created_at), '-12:59', '+13:00')) AS tz_date
         FROM orders GROUP BY merchant_id, DATE(DATE_ADD(created_at, INTERVAL 8 HOUR)),
           HOUR(created_at + INTERVAL 8 HOUR)",
    ),
    (
        "daily",
        "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders, COUNT(customer_id) AS with_customer,
           SUM(amount) AS gmv, AVG(amount) AS avg_amount, MIN(amount) AS min_amount, MAX(amount) AS max_amount,
           COUNT(DISTINCT customer_id) AS customers, SUM(qty) AS items, AVG(qty) AS avg_qty
         FROM orders WHERE status <> 'cancelled' GROUP BY merchant_id, DATE(created_at)",
    ),
    (
        "by_status_hour",
        "SELECT merchant_id, status, HOUR(created_at) AS hour, COUNT(*) AS n,
           SUM(CASE WHEN status = 'refunded' THEN -amount ELSE amount END) AS net,
           SUM(amount) - SUM(IFNULL(qty, 0)) AS diff, ROUND(SUM(amount) / COUNT(*), 2) AS avg_ticket,
           MIN(created_at) AS first_at, MAX(customer_id) AS last_customer, SUM(amount) / SUM(qty) AS per_item
         FROM orders GROUP BY merchant_id, status, hour",
    ),
    (
        "monthly",
        "SELECT merchant_id, DATE_FORMAT(created_at, '%Y-%m') AS month, COUNT(*) AS n,
           COUNT(DISTINCT status) AS statuses,
           MIN(DATE_FORMAT(created_at, '%d %H:%i:%s %p %W %b %j %e %c %k %y %a %M %l %h %T')) AS first_label,
           SUM(rate) AS rate_sum, AVG(rate) AS rate_avg, MAX(rate) AS rate_max,
           SUM(IF(status IN ('paid', 'refunded'), 1, 0)) AS settled
         FROM orders WHERE created_at IS NOT NULL GROUP BY merchant_id, month HAVING COUNT(*) > 1",
    ),
    (
        "customers",
        "SELECT merchant_id, customer_id, COUNT(*) AS n, SUM(amount * qty) AS total, MAX(amount) AS top,
           COALESCE(SUM(amount), 0) AS gmv0, AVG(amount * qty) AS avg_total,
           COUNT(DISTINCT DATE(created_at)) AS active_days, GREATEST(MAX(qty), 1) AS g,
           WEEKDAY(MIN(created_at)) AS wd, DAYOFWEEK(MAX(created_at)) AS dw
         FROM orders WHERE amount BETWEEN 0 AND 500 OR status LIKE 'ref%'
         GROUP BY merchant_id, customer_id",
    ),
    (
        "sizes",
        "SELECT merchant_id,
           CASE WHEN amount >= 500 THEN 'large' WHEN amount >= 100 THEN 'medium' ELSE 'small' END AS size,
           EXTRACT(DAY FROM created_at) AS d, CAST(created_at AS DATE) AS day, COUNT(*) AS n,
           SUM(CAST(amount AS SIGNED)) AS whole, SUM(amount DIV 3) AS thirds, SUM(qty % 2) AS odd,
           AVG(rate * 2) AS r2, MIN(CONCAT(status, '-', qty)) AS tag, NOT (COUNT(*) > 2) AS few,
           COUNT(*) DIV 2 AS halves, MAX(CASE status WHEN 'paid' THEN amount ELSE 0 END) AS max_paid
         FROM orders WHERE NOT (status IS NULL) GROUP BY 1, 2, 3, 4",
    ),
    (
        "misc",
        "SELECT merchant_id, YEAR(created_at) AS y, MONTH(created_at) AS m, QUARTER(created_at) AS q,
           COUNT(*) AS n, SUM(qty / 3) AS thirds, AVG(qty / 3) AS avg_thirds, MAX(ABS(amount)) AS max_abs,
           SUM(FLOOR(amount)) + SUM(CEIL(amount)) AS fc, MIN(TRUNCATE(amount, 1)) AS tr,
           SUM(CAST(amount AS DECIMAL(10,1))) AS cast1, MAX(CONCAT(UPPER(channel), LOWER(status))) AS up,
           COUNT(DISTINCT channel) AS channels, SUM(channel = 'WEB') AS web, SUM(channel LIKE 'a%') AS app,
           SUM(IFNULL(NULLIF(qty, 0), 10)) AS nz, SUM(MOD(qty, 3)) AS m3, SUM(SIGN(amount)) AS sg,
           MAX(MINUTE(created_at) + SECOND(created_at)) AS ms, MIN(DAYOFYEAR(created_at)) AS doy,
           SUM(customer_id <=> qty) AS same_cq, SUM((qty > 2) <> (amount > 100)) AS x,
           SUM((amount > 50) IS TRUE) AS t, SUM(qty NOT BETWEEN 1 AND 3) AS nb,
           SUM(status NOT IN ('paid', 'new')) AS ni, SUM(status NOT LIKE '%a%') AS nl,
           ROUND(SUM(amount), -1) AS r10, MAX(TIME(created_at)) AS max_time, SUM('5' + qty) AS five,
           MIN(CAST(qty AS CHAR)) AS qc, SUM(created_at >= DATE '2026-11-20') AS recent,
           COUNT(DISTINCT HOUR(created_at) DIV 6) AS day_parts, MAX(CONVERT(amount, SIGNED)) AS conv
         FROM orders GROUP BY merchant_id, y, m, q",
    ),
];

pub fn engine() -> Engine {
    static SET: OnceLock<Arc<ReportSet>> = OnceLock::new();
    let set = SET.get_or_init(|| {
        let reports = REPORTS.iter().map(|(name, sql)| {
            Report::parse(name, name, sql, &TenantColumns::default())
                .unwrap_or_else(|e| panic!("{e}"))
        });
        Arc::new(ReportSet::from_reports(reports))
    });
    Engine::new(set.clone())
}

/// Column values of a generated row (indexes into small domains so that
/// groups collide often).
#[derive(Debug, Clone)]
pub struct Fields {
    pub merchant: i64,
    pub customer: Option<i64>,
    pub status: Option<usize>,
    pub amount_cents: Option<i64>,
    pub qty: Option<i64>,
    pub rate_quarters: Option<i64>,
    pub channel: Option<usize>,
    /// Day of November 2026, hour, minute, second.
    pub created: Option<(u32, u32, u32, u32)>,
}

#[derive(Debug, Clone)]
pub enum Step {
    Insert(Fields),
    /// Replace the columns selected by `mask` of the `pick`-th live row.
    Update {
        pick: usize,
        mask: u8,
        fields: Fields,
    },
    Delete {
        pick: usize,
    },
    /// Re-snapshot the table: `Reset` followed by every live row.
    Resnapshot,
}

fn fields() -> impl Strategy<Value = Fields> {
    (
        prop_oneof![6 => Just(1i64), 3 => Just(2i64), 1 => Just(3i64)],
        proptest::option::weighted(0.8, 1i64..6),
        proptest::option::weighted(0.9, 0usize..STATUSES.len()),
        proptest::option::weighted(
            0.9,
            prop_oneof![8 => 0i64..80_000, 1 => -5_000i64..0, 1 => Just(0i64)],
        ),
        proptest::option::weighted(0.85, 0i64..5),
        proptest::option::weighted(0.8, -4i64..20),
        proptest::option::weighted(0.9, (18u32..22, 0u32..24, 0u32..60, 0u32..60)),
        proptest::option::weighted(0.9, 0usize..CHANNELS.len()),
    )
        .prop_map(
            |(merchant, customer, status, amount_cents, qty, rate_quarters, created, channel)| {
                Fields {
                    merchant,
                    customer,
                    status,
                    amount_cents,
                    qty,
                    rate_quarters,
                    channel,
                    created,
                }
            },
        )
}

pub fn steps(max: usize) -> impl Strategy<Value = Vec<Step>> {
    let step = prop_oneof![
        5 => fields().prop_map(Step::Insert),
        5 => (any::<usize>(), 1u8..=255, fields()).prop_map(|(pick, mask, fields)| Step::Update { pick, mask, fields }),
        2 => any::<usize>().prop_map(|pick| Step::Delete { pick }),
        1 => Just(Step::Resnapshot),
    ];
    proptest::collection::vec(step, 1..max)
}

/// Window sizes, used cyclically to cut the change stream.
pub fn windows() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(1usize..40, 1..8)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: i64,
    pub merchant_id: i64,
    pub customer_id: Option<i64>,
    pub status: Option<&'static str>,
    pub amount: Option<Decimal>,
    pub qty: Option<i64>,
    pub rate: Option<f64>,
    pub channel: Option<&'static str>,
    pub created_at: Option<NaiveDateTime>,
}

impl Order {
    fn set(&mut self, f: &Fields, mask: u8) {
        if mask & 1 != 0 && mask & 0x80 != 0 {
            // Moving an order to another merchant is rare.
            self.merchant_id = f.merchant;
        }
        if mask & 2 != 0 {
            self.customer_id = f.customer;
        }
        if mask & 4 != 0 {
            self.status = f.status.map(|i| STATUSES[i]);
        }
        if mask & 8 != 0 {
            self.amount = f.amount_cents.map(|c| Decimal::new(c, 2));
        }
        if mask & 16 != 0 {
            self.qty = f.qty;
        }
        if mask & 32 != 0 {
            self.rate = f.rate_quarters.map(|q| q as f64 / 4.0);
        }
        if mask & 32 != 0 {
            self.channel = f.channel.map(|i| CHANNELS[i]);
        }
        if mask & 64 != 0 {
            self.created_at = f.created.and_then(|(d, h, m, s)| {
                NaiveDate::from_ymd_opt(2026, 11, d).and_then(|day| day.and_hms_opt(h, m, s))
            });
        }
    }

    pub fn row(&self) -> Row {
        let mut r = Row::new();
        let opt = |v: Option<Value>| v.unwrap_or(Value::Null);
        r.insert("id".into(), Value::I(self.id));
        r.insert("merchant_id".into(), Value::I(self.merchant_id));
        r.insert("customer_id".into(), opt(self.customer_id.map(Value::I)));
        r.insert(
            "status".into(),
            opt(self.status.map(|s| Value::S(s.into()))),
        );
        r.insert("amount".into(), opt(self.amount.map(Value::D)));
        r.insert("qty".into(), opt(self.qty.map(Value::I)));
        r.insert("rate".into(), opt(self.rate.map(Value::F)));
        r.insert(
            "channel".into(),
            opt(self.channel.map(|s| Value::S(s.into()))),
        );
        r.insert("created_at".into(), opt(self.created_at.map(Value::Dt)));
        r
    }

    /// The row as a SQL value list.
    pub fn sql_values(&self) -> String {
        fn lit<T: ToString>(v: Option<T>, quote: bool) -> String {
            match v {
                None => "NULL".into(),
                Some(x) if quote => format!("'{}'", x.to_string()),
                Some(x) => x.to_string(),
            }
        }
        format!(
            "({}, {}, {}, {}, {}, {}, {}, {}, {})",
            self.id,
            self.merchant_id,
            lit(self.customer_id, false),
            lit(self.status, true),
            lit(self.amount, false),
            lit(self.qty, false),
            lit(self.rate, false),
            lit(self.channel, true),
            lit(self.created_at.map(|d| d.format("%Y-%m-%d %H:%M:%S")), true),
        )
    }
}

/// The source table as the tests see it, plus the change events and SQL
/// statements that reproduce each step.
#[derive(Debug, Default)]
pub struct Table {
    pub rows: BTreeMap<i64, Order>,
    next_id: i64,
    seq: u64,
}

pub fn event(seq: u64, op: Op, before: Option<Row>, after: Option<Row>) -> ChangeEvent {
    let tenant = after
        .as_ref()
        .or(before.as_ref())
        .and_then(|r| r.get("merchant_id"))
        .map_or(String::new(), Value::key_text);
    ChangeEvent {
        id: EventId(format!("test/{seq}")),
        source: "shop".into(),
        table: "orders".into(),
        op,
        tenant: TenantId(tenant),
        partition: 0,
        pk: vec![],
        before,
        after,
        commit_ts_ms: 0,
        position: Position {
            file: "binlog.000001".into(),
            offset: seq,
            row: 0,
            snapshot: false,
        },
        captured_at_ms: 0,
    }
}

impl Table {
    /// Applies one step: the change events it produces and the SQL that does
    /// the same to a real table (empty for a re-snapshot).
    pub fn apply(&mut self, step: &Step) -> (Vec<ChangeEvent>, Option<String>) {
        self.seq += 1;
        let seq = self.seq;
        match step {
            Step::Insert(f) => {
                self.next_id += 1;
                let mut o = Order {
                    id: self.next_id,
                    merchant_id: f.merchant,
                    customer_id: None,
                    status: None,
                    amount: None,
                    qty: None,
                    rate: None,
                    channel: None,
                    created_at: None,
                };
                o.set(f, 0xff);
                let sql = format!("INSERT INTO orders VALUES {}", o.sql_values());
                let ev = event(seq, Op::Insert, None, Some(o.row()));
                self.rows.insert(o.id, o);
                (vec![ev], Some(sql))
            }
            Step::Update { pick, mask, fields } => {
                let Some(id) = self.pick(*pick) else {
                    return (vec![], None);
                };
                let Some(o) = self.rows.get_mut(&id) else {
                    return (vec![], None);
                };
                let before = o.row();
                o.set(fields, *mask);
                let sql = format!("REPLACE INTO orders VALUES {}", o.sql_values());
                (
                    vec![event(seq, Op::Update, Some(before), Some(o.row()))],
                    Some(sql),
                )
            }
            Step::Delete { pick } => {
                let Some(id) = self.pick(*pick) else {
                    return (vec![], None);
                };
                let Some(o) = self.rows.remove(&id) else {
                    return (vec![], None);
                };
                let sql = format!("DELETE FROM orders WHERE id = {id}");
                (vec![event(seq, Op::Delete, Some(o.row()), None)], Some(sql))
            }
            Step::Resnapshot => {
                let mut evs = vec![event(seq, Op::Reset, None, None)];
                for o in self.rows.values() {
                    evs.push(event(seq, Op::Snapshot, None, Some(o.row())));
                }
                (evs, None)
            }
        }
    }

    fn pick(&self, pick: usize) -> Option<i64> {
        if self.rows.is_empty() {
            return None;
        }
        self.rows.keys().nth(pick % self.rows.len()).copied()
    }
}

/// A report's current rows: key text → select values.
pub type Rows = BTreeMap<String, Vec<Value>>;

/// Folds emitted result rows into the served state, as result-writer does.
pub fn fold_results(served: &mut BTreeMap<String, Rows>, rows: Vec<ResultRow>) {
    for r in rows {
        let key = r.key_text();
        let report = served.entry(r.report.clone()).or_default();
        if r.deleted {
            assert!(
                report.remove(&key).is_some(),
                "{}: deleted row {key:?} was never served",
                r.report
            );
        } else {
            report.insert(key, r.values);
        }
    }
}

/// Runs a fresh engine over the table's current rows (a from-scratch
/// recompute) and returns every report's rows.
pub fn recompute(table: &Table) -> BTreeMap<String, Rows> {
    let engine = engine();
    let mut store = MemoryStateStore::new();
    let events: Vec<ChangeEvent> = table
        .rows
        .values()
        .enumerate()
        .map(|(i, o)| event(i as u64, Op::Snapshot, None, Some(o.row())))
        .collect();
    let mut served = BTreeMap::new();
    let rows = engine
        .apply(&mut store, &events)
        .unwrap_or_else(|e| panic!("{e}"));
    fold_results(&mut served, rows);
    served.retain(|_, rows: &mut Rows| !rows.is_empty());
    served
}
