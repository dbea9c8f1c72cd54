//! Report rows as served: columns in select order, the date key, and the
//! deterministic sort order (date key, then the other key columns, then the
//! canonical key text) that paging relies on.

use mdp_result_writer::layout::DAY_FIELD;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;

/// A JSON object whose field order is kept.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrderedObject(pub Vec<(String, serde_json::Value)>);

impl<'de> Deserialize<'de> for OrderedObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OrderedObject;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<OrderedObject, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
                    fields.push((k, v));
                }
                Ok(OrderedObject(fields))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for OrderedObject {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A stored row that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("stored row is not a JSON object: {0}")]
pub struct RowParseError(String);

/// One report row with its position in the sort order.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    pub key: SortKey,
    /// Column → value, in select order.
    pub columns: OrderedObject,
}

impl ReportRow {
    /// Builds a row from its stored JSON. `day` is the row's date key when
    /// known (the MySQL `day` column); otherwise the `_day` field of the
    /// Redis form is used. `key_columns` are the names of the key columns
    /// other than the date column, in select order.
    pub fn parse(
        key_text: &str,
        json: &str,
        day: Option<String>,
        key_columns: &[String],
    ) -> Result<Self, RowParseError> {
        let mut object: OrderedObject =
            serde_json::from_str(json).map_err(|e| RowParseError(e.to_string()))?;
        let mut day = day;
        if let Some(pos) = object.0.iter().position(|(k, _)| k == DAY_FIELD) {
            let (_, v) = object.0.remove(pos);
            if day.is_none() {
                day = v.as_str().map(str::to_string);
            }
        }
        let keys = key_columns
            .iter()
            .map(|name| {
                object
                    .0
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
                    .unwrap_or(serde_json::Value::Null)
            })
            .collect();
        Ok(ReportRow {
            key: SortKey {
                day,
                keys,
                key_text: key_text.to_string(),
            },
            columns: object,
        })
    }

    /// The row's date key, `YYYY-MM-DD`.
    pub fn day(&self) -> Option<&str> {
        self.key.day.as_deref()
    }
}

/// Position of a row: date key, other key values, canonical key text (unique).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    #[serde(rename = "d")]
    pub day: Option<String>,
    #[serde(rename = "k")]
    pub keys: Vec<serde_json::Value>,
    #[serde(rename = "t")]
    pub key_text: String,
}

impl SortKey {
    /// Total order: missing day first, then days chronologically, then the
    /// key values ([`json_cmp`]), then the key text.
    pub fn compare(&self, other: &Self) -> Ordering {
        self.day
            .cmp(&other.day)
            .then_with(|| {
                for (a, b) in self.keys.iter().zip(&other.keys) {
                    let o = json_cmp(a, b);
                    if o != Ordering::Equal {
                        return o;
                    }
                }
                self.keys.len().cmp(&other.keys.len())
            })
            .then_with(|| self.key_text.cmp(&other.key_text))
    }
}

fn type_rank(v: &serde_json::Value) -> u8 {
    use serde_json::Value as J;
    match v {
        J::Null => 0,
        J::Bool(_) => 1,
        J::Number(_) => 2,
        J::String(_) => 3,
        J::Array(_) => 4,
        J::Object(_) => 5,
    }
}

/// Order of JSON values: null < booleans < numbers (by value) < strings
/// (bytewise) < arrays < objects.
pub fn json_cmp(a: &serde_json::Value, b: &serde_json::Value) -> Ordering {
    use serde_json::Value as J;
    match (a, b) {
        (J::Bool(x), J::Bool(y)) => x.cmp(y),
        (J::Number(x), J::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x.cmp(&y)
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x.cmp(&y)
            } else {
                let x = x.as_f64().unwrap_or(f64::NAN);
                let y = y.as_f64().unwrap_or(f64::NAN);
                x.total_cmp(&y)
            }
        }
        (J::String(x), J::String(y)) => x.cmp(y),
        (J::Array(x), J::Array(y)) => {
            for (a, b) in x.iter().zip(y) {
                let o = json_cmp(a, b);
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
        _ => type_rank(a).cmp(&type_rank(b)),
    }
}

/// Sorts rows into serving order.
pub fn sort_rows(rows: &mut [ReportRow]) {
    rows.sort_by(|a, b| a.key.compare(&b.key));
}

/// One page of sorted rows: those after `after` (exclusive), at most
/// `limit`, and the key of the last row when more follow.
pub fn page<'a>(
    rows: &'a [ReportRow],
    after: Option<&SortKey>,
    limit: usize,
) -> (&'a [ReportRow], Option<&'a SortKey>) {
    let start = match after {
        Some(token) => rows.partition_point(|r| r.key.compare(token) != Ordering::Greater),
        None => 0,
    };
    let end = start.saturating_add(limit).min(rows.len());
    let slice = &rows[start..end];
    let next = if end < rows.len() {
        slice.last().map(|r| &r.key)
    } else {
        None
    };
    (slice, next)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn row(day: Option<&str>, key: &[serde_json::Value], text: &str) -> ReportRow {
        ReportRow {
            key: SortKey {
                day: day.map(str::to_string),
                keys: key.to_vec(),
                key_text: text.to_string(),
            },
            columns: OrderedObject::default(),
        }
    }

    #[test]
    fn parse_keeps_column_order_and_integers() {
        let r = ReportRow::parse(
            "7\u{1f}2026-11-21",
            r#"{"merchant_id":7,"day":"2026-11-21","orders":3,"gmv":12.5,"_day":"2026-11-21"}"#,
            None,
            &["merchant_id".to_string()],
        )
        .unwrap();
        assert_eq!(r.day(), Some("2026-11-21"));
        assert_eq!(r.key.keys, vec![json!(7)]);
        let text = serde_json::to_string(&r.columns).unwrap();
        assert_eq!(
            text,
            r#"{"merchant_id":7,"day":"2026-11-21","orders":3,"gmv":12.5}"#
        );
        assert!(r.columns.0[2].1.is_i64());
        assert!(ReportRow::parse("k", "[1]", None, &[]).is_err());
    }

    #[test]
    fn rows_sort_by_day_then_numeric_keys_then_text() {
        let mut rows = vec![
            row(Some("2026-11-02"), &[json!(1)], "b"),
            row(Some("2026-11-01"), &[json!(10)], "c"),
            row(Some("2026-11-01"), &[json!(9)], "d"),
            row(None, &[json!(5)], "e"),
            row(Some("2026-11-01"), &[json!(9)], "a"),
            row(Some("2026-11-01"), &[json!("x")], "f"),
            row(Some("2026-11-01"), &[json!(null)], "g"),
        ];
        sort_rows(&mut rows);
        let order: Vec<&str> = rows.iter().map(|r| r.key.key_text.as_str()).collect();
        assert_eq!(order, vec!["e", "g", "a", "d", "c", "f", "b"]);
    }

    #[test]
    fn json_numbers_compare_by_value() {
        assert_eq!(json_cmp(&json!(2), &json!(10)), Ordering::Less);
        assert_eq!(json_cmp(&json!(2.5), &json!(2)), Ordering::Greater);
        assert_eq!(json_cmp(&json!(-1), &json!(u64::MAX)), Ordering::Less);
        assert_eq!(json_cmp(&json!("10"), &json!("9")), Ordering::Less);
        assert_eq!(json_cmp(&json!(null), &json!(0)), Ordering::Less);
    }

    #[test]
    fn pages_resume_after_the_token() {
        let mut rows: Vec<ReportRow> = (1..=5)
            .map(|i| row(Some(&format!("2026-11-0{i}")), &[], &i.to_string()))
            .collect();
        sort_rows(&mut rows);
        let (p1, next) = page(&rows, None, 2);
        assert_eq!(p1.len(), 2);
        let next = next.cloned().unwrap();
        assert_eq!(next.key_text, "2");
        let (p2, next2) = page(&rows, Some(&next), 2);
        assert_eq!(
            p2.iter()
                .map(|r| r.key.key_text.as_str())
                .collect::<Vec<_>>(),
            ["3", "4"]
        );
        let (p3, next3) = page(&rows, next2, 2);
        assert_eq!(p3.len(), 1);
        assert!(next3.is_none());
        // A token past the end gives an empty last page.
        let (p4, next4) = page(&rows, Some(&rows[4].key), 2);
        assert!(p4.is_empty() && next4.is_none());
        // Exactly one full page: no token.
        let (all, none) = page(&rows, None, 5);
        assert_eq!(all.len(), 5);
        assert!(none.is_none());
    }
}
