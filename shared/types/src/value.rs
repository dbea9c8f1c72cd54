//! A typed SQL value as captured from the source database.
//!
//! The type is kept (integer, decimal, float, string, date, datetime) so the
//! report engine can follow MySQL's typing rules: `SUM` over integers stays an
//! integer, over `DECIMAL(10,2)` stays an exact decimal.

use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;

/// One SQL value. Wire form is externally tagged JSON, e.g. `{"I":42}`,
/// `{"D":"12.30"}`, `{"S":"paid"}`, `{"Dt":"2026-11-21T10:00:00"}`, `"Null"`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub enum Value {
    /// SQL NULL.
    Null,
    /// Any signed integer column (TINYINT … BIGINT).
    I(i64),
    /// BIGINT UNSIGNED values above `i64::MAX`.
    U(u64),
    /// FLOAT / DOUBLE.
    F(f64),
    /// DECIMAL / NUMERIC, exact.
    D(Decimal),
    /// CHAR / VARCHAR / TEXT / ENUM / SET (as text).
    S(String),
    /// BINARY / BLOB, kept as bytes.
    B(Vec<u8>),
    /// DATE.
    Date(NaiveDate),
    /// DATETIME / TIMESTAMP (UTC for TIMESTAMP, as stored for DATETIME).
    Dt(NaiveDateTime),
    /// TIME of day (MySQL TIME values beyond 24h are clamped by the producer).
    Time(NaiveTime),
}

impl Value {
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// Plain JSON for API answers: integers stay integers, decimals and
    /// floats become numbers, dates become `YYYY-MM-DD`, datetimes
    /// `YYYY-MM-DD HH:MM:SS` (MySQL's text form).
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            Value::Null => J::Null,
            Value::I(i) => J::from(*i),
            Value::U(u) => J::from(*u),
            Value::F(f) => serde_json::Number::from_f64(*f)
                .map(J::Number)
                .unwrap_or(J::Null),
            Value::D(d) => decimal_to_json(d),
            Value::S(s) => J::String(s.clone()),
            Value::B(b) => J::String(String::from_utf8_lossy(b).into_owned()),
            Value::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
            Value::Dt(dt) => J::String(format_datetime(dt)),
            Value::Time(t) => J::String(t.format("%H:%M:%S").to_string()),
        }
    }

    /// A canonical text form used in keys (Redis fields, MySQL key hashes).
    /// Two values that compare equal as group keys have the same text.
    pub fn key_text(&self) -> String {
        match self {
            Value::Null => "\u{0}NULL".to_string(),
            Value::I(i) => i.to_string(),
            Value::U(u) => u.to_string(),
            Value::F(f) => format!("{f}"),
            Value::D(d) => d.normalize().to_string(),
            Value::S(s) => s.clone(),
            Value::B(b) => String::from_utf8_lossy(b).into_owned(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Dt(dt) => format_datetime(dt),
            Value::Time(t) => t.format("%H:%M:%S").to_string(),
        }
    }

    /// Total order used for sorting keys and for MIN/MAX: NULL first, numbers
    /// by value, strings bytewise, dates chronologically. Values of unrelated
    /// types order by type rank.
    pub fn total_cmp(&self, other: &Value) -> Ordering {
        if let (Some(a), Some(b)) = (self.as_decimal(), other.as_decimal()) {
            return a.cmp(&b);
        }
        if let (Some(a), Some(b)) = (self.as_f64(), other.as_f64()) {
            return a.total_cmp(&b);
        }
        match (self, other) {
            (Value::S(a), Value::S(b)) => a.cmp(b),
            (Value::B(a), Value::B(b)) => a.cmp(b),
            (Value::Date(a), Value::Date(b)) => a.cmp(b),
            (Value::Dt(a), Value::Dt(b)) => a.cmp(b),
            (Value::Date(a), Value::Dt(b)) => a.and_time(NaiveTime::MIN).cmp(b),
            (Value::Dt(a), Value::Date(b)) => a.cmp(&b.and_time(NaiveTime::MIN)),
            (Value::Time(a), Value::Time(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::I(_) | Value::U(_) | Value::F(_) | Value::D(_) => 1,
            Value::Date(_) | Value::Dt(_) => 2,
            Value::Time(_) => 3,
            Value::S(_) => 4,
            Value::B(_) => 5,
        }
    }

    /// The exact numeric value, for integer and decimal values.
    pub fn as_decimal(&self) -> Option<Decimal> {
        match self {
            Value::I(i) => Some(Decimal::from(*i)),
            Value::U(u) => Some(Decimal::from(*u)),
            Value::D(d) => Some(*d),
            _ => None,
        }
    }

    /// The numeric value as a float, for any numeric value.
    pub fn as_f64(&self) -> Option<f64> {
        use rust_decimal::prelude::ToPrimitive;
        match self {
            Value::I(i) => Some(*i as f64),
            Value::U(u) => Some(*u as f64),
            Value::F(f) => Some(*f),
            Value::D(d) => d.to_f64(),
            _ => None,
        }
    }
}

/// MySQL's text form of a DATETIME: fractional seconds only when present.
pub fn format_datetime(dt: &NaiveDateTime) -> String {
    if dt.and_utc().timestamp_subsec_micros() == 0 {
        dt.format("%Y-%m-%d %H:%M:%S").to_string()
    } else {
        dt.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
    }
}

/// A decimal as a JSON number: integral decimals become JSON integers, the
/// rest a float parsed from the exact decimal text (shortest round trip).
pub fn decimal_to_json(d: &Decimal) -> serde_json::Value {
    use rust_decimal::prelude::ToPrimitive;
    let n = d.normalize();
    if n.scale() == 0 {
        if let Some(i) = n.to_i64() {
            return serde_json::Value::from(i);
        }
    }
    n.to_string()
        .parse::<f64>()
        .ok()
        .and_then(serde_json::Number::from_f64)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            other => f.write_str(&other.key_text()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::S(v.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_keeps_integers_and_formats_dates() {
        assert_eq!(Value::I(7).to_json(), serde_json::json!(7));
        assert_eq!(
            Value::D("12.50".parse().unwrap()).to_json(),
            serde_json::json!(12.5)
        );
        assert_eq!(
            Value::D("12.00".parse().unwrap()).to_json(),
            serde_json::json!(12)
        );
        let dt = NaiveDate::from_ymd_opt(2026, 11, 21)
            .unwrap()
            .and_hms_opt(9, 5, 0)
            .unwrap();
        assert_eq!(
            Value::Dt(dt).to_json(),
            serde_json::json!("2026-11-21 09:05:00")
        );
    }

    #[test]
    fn wire_form_round_trips() {
        let vals = vec![
            Value::Null,
            Value::I(-3),
            Value::D("1.20".parse().unwrap()),
            Value::S("paid".into()),
            Value::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap()),
        ];
        let text = serde_json::to_string(&vals).unwrap();
        let back: Vec<Value> = serde_json::from_str(&text).unwrap();
        assert_eq!(vals, back);
    }

    #[test]
    fn numbers_compare_across_types() {
        assert_eq!(
            Value::I(2).total_cmp(&Value::D("1.5".parse().unwrap())),
            Ordering::Greater
        );
        assert_eq!(Value::Null.total_cmp(&Value::I(0)), Ordering::Less);
        assert_eq!(
            Value::I(1).key_text(),
            Value::D("1.000".parse().unwrap()).key_text()
        );
    }
}
