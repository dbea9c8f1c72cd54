//! Conversion of MySQL/MariaDB column values (binlog row images and snapshot
//! result sets) into the platform's typed [`mdp_types::Value`].
//!
//! Both paths go through one [`ColumnKind`], so a row read by the snapshot
//! and the same row read from the binlog produce identical values.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime};
use mdp_types::Value;
use mysql_async::consts::{ColumnFlags, ColumnType};
use mysql_async::Value as MyValue;
use rust_decimal::Decimal;
use std::collections::HashMap;

/// The character set number MySQL uses for binary strings (BINARY, VARBINARY, BLOB).
pub const BINARY_CHARSET: u16 = 63;

/// How the bytes of a string column are encoded. The binlog carries strings
/// in the column's own character set (result sets in the connection's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// utf8mb4, utf8mb3, ascii.
    Utf8,
    /// MySQL's latin1, which is Windows-1252.
    Latin1,
    /// Not text: kept as bytes.
    Binary,
}

impl TextEncoding {
    fn of_charset_name(name: &str) -> Option<Self> {
        match name.to_ascii_lowercase().as_str() {
            "utf8mb4" | "utf8mb3" | "utf8" | "ascii" => Some(TextEncoding::Utf8),
            "latin1" => Some(TextEncoding::Latin1),
            "binary" => Some(TextEncoding::Binary),
            _ => None,
        }
    }

    /// Decodes `bytes`; invalid sequences become U+FFFD rather than failing.
    pub fn decode(self, bytes: Vec<u8>) -> String {
        match self {
            TextEncoding::Latin1 => bytes.iter().map(|b| cp1252(*b)).collect(),
            TextEncoding::Utf8 | TextEncoding::Binary => bytes_to_string(bytes),
        }
    }
}

/// Collation id → encoding, as listed by the server (`information_schema.COLLATIONS`),
/// falling back to a built-in table of the common ids.
#[derive(Debug, Clone)]
pub struct Collations(HashMap<u16, TextEncoding>);

impl Default for Collations {
    fn default() -> Self {
        let mut m = HashMap::new();
        let utf8 = [33u16, 45, 46, 83, 255]
            .into_iter()
            .chain(192..=215)
            .chain(224..=247)
            .chain([11, 65]);
        for id in utf8 {
            m.insert(id, TextEncoding::Utf8);
        }
        for id in [5u16, 8, 15, 31, 47, 48, 49, 94] {
            m.insert(id, TextEncoding::Latin1);
        }
        m.insert(BINARY_CHARSET, TextEncoding::Binary);
        Collations(m)
    }
}

impl Collations {
    /// Adds the server's `(collation id, character set name)` list to the built-in table.
    pub fn with_server_list(mut self, rows: impl IntoIterator<Item = (u16, String)>) -> Self {
        for (id, charset) in rows {
            if let Some(enc) = TextEncoding::of_charset_name(&charset) {
                self.0.insert(id, enc);
            }
        }
        self
    }

    /// The encoding of collation `id`; unknown ids are read as UTF-8.
    pub fn encoding(&self, id: u16) -> TextEncoding {
        self.0.get(&id).copied().unwrap_or(TextEncoding::Utf8)
    }
}

/// Windows-1252 (MySQL latin1) byte → char.
fn cp1252(b: u8) -> char {
    const HIGH: [u16; 32] = [
        0x20AC, 0x0081, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
        0x2039, 0x0152, 0x008D, 0x017D, 0x008F, 0x0090, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
        0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0x009D, 0x017E, 0x0178,
    ];
    match b {
        0x80..=0x9F => char::from_u32(u32::from(HIGH[usize::from(b - 0x80)])).unwrap_or('\u{FFFD}'),
        _ => char::from(b),
    }
}

/// How a column's raw values become [`Value`]s.
#[derive(Debug, Clone, PartialEq)]
pub enum ColumnKind {
    /// TINYINT … BIGINT, signed or unsigned.
    Int,
    /// YEAR.
    Year,
    /// FLOAT (single precision).
    Float,
    /// DOUBLE.
    Double,
    /// DECIMAL / NUMERIC.
    Decimal,
    /// DATE.
    Date,
    /// DATETIME (as stored, no time zone).
    DateTime,
    /// TIMESTAMP (UTC).
    Timestamp,
    /// TIME.
    Time,
    /// CHAR / VARCHAR / TEXT / JSON text and anything with a character set.
    Text(TextEncoding),
    /// BINARY / VARBINARY / BLOB / GEOMETRY.
    Binary,
    /// ENUM with its members in declaration order (binlog carries the 1-based index).
    Enum(Vec<String>),
    /// SET with its members in declaration order (binlog carries a bit mask).
    Set(Vec<String>),
    /// BIT(n).
    Bit,
    /// JSON (MySQL's binary JSON type).
    Json,
}

impl ColumnKind {
    /// The kind of a column given its wire type, flags and the encoding of its
    /// character set. `members` holds ENUM/SET members when the type is ENUM or SET.
    pub fn from_type(
        ty: ColumnType,
        flags: ColumnFlags,
        encoding: TextEncoding,
        members: Vec<String>,
    ) -> Self {
        use ColumnType::*;
        match ty {
            MYSQL_TYPE_TINY | MYSQL_TYPE_SHORT | MYSQL_TYPE_INT24 | MYSQL_TYPE_LONG
            | MYSQL_TYPE_LONGLONG => ColumnKind::Int,
            MYSQL_TYPE_YEAR => ColumnKind::Year,
            MYSQL_TYPE_FLOAT => ColumnKind::Float,
            MYSQL_TYPE_DOUBLE => ColumnKind::Double,
            MYSQL_TYPE_DECIMAL | MYSQL_TYPE_NEWDECIMAL => ColumnKind::Decimal,
            MYSQL_TYPE_DATE | MYSQL_TYPE_NEWDATE => ColumnKind::Date,
            MYSQL_TYPE_DATETIME | MYSQL_TYPE_DATETIME2 => ColumnKind::DateTime,
            MYSQL_TYPE_TIMESTAMP | MYSQL_TYPE_TIMESTAMP2 => ColumnKind::Timestamp,
            MYSQL_TYPE_TIME | MYSQL_TYPE_TIME2 => ColumnKind::Time,
            MYSQL_TYPE_BIT => ColumnKind::Bit,
            MYSQL_TYPE_JSON => ColumnKind::Json,
            MYSQL_TYPE_ENUM => ColumnKind::Enum(members),
            MYSQL_TYPE_SET => ColumnKind::Set(members),
            MYSQL_TYPE_GEOMETRY | MYSQL_TYPE_VECTOR => ColumnKind::Binary,
            MYSQL_TYPE_STRING
            | MYSQL_TYPE_VAR_STRING
            | MYSQL_TYPE_VARCHAR
            | MYSQL_TYPE_TINY_BLOB
            | MYSQL_TYPE_MEDIUM_BLOB
            | MYSQL_TYPE_LONG_BLOB
            | MYSQL_TYPE_BLOB => {
                // In result sets ENUM/SET columns arrive as strings carrying their member text.
                if flags.intersects(ColumnFlags::ENUM_FLAG | ColumnFlags::SET_FLAG) {
                    ColumnKind::Text(if encoding == TextEncoding::Binary {
                        TextEncoding::Utf8
                    } else {
                        encoding
                    })
                } else if encoding == TextEncoding::Binary {
                    ColumnKind::Binary
                } else {
                    ColumnKind::Text(encoding)
                }
            }
            MYSQL_TYPE_NULL | MYSQL_TYPE_TYPED_ARRAY | MYSQL_TYPE_UNKNOWN => ColumnKind::Binary,
        }
    }

    /// Converts one raw value. Never fails: values that cannot be represented
    /// exactly (zero dates, DECIMALs wider than 28 digits) are mapped as
    /// documented on each arm.
    pub fn convert(&self, v: MyValue) -> Value {
        if matches!(v, MyValue::NULL) {
            return Value::Null;
        }
        match self {
            ColumnKind::Int | ColumnKind::Year => int_value(v),
            ColumnKind::Float => match v {
                // Shortest decimal text of the f32, so 0.1 stays 0.1 as f64.
                MyValue::Float(f) => Value::F(f32_to_f64(f)),
                other => float_value(other),
            },
            ColumnKind::Double => float_value(v),
            ColumnKind::Decimal => decimal_value(v),
            ColumnKind::Date => match v {
                MyValue::Date(y, m, d, ..) => date(y, m, d).map(Value::Date).unwrap_or(Value::Null),
                other => text_fallback(other),
            },
            ColumnKind::DateTime => match v {
                MyValue::Date(y, m, d, h, mi, s, us) => datetime(y, m, d, h, mi, s, us)
                    .map(Value::Dt)
                    .unwrap_or(Value::Null),
                other => text_fallback(other),
            },
            ColumnKind::Timestamp => timestamp_value(v),
            ColumnKind::Time => match v {
                MyValue::Time(neg, days, h, m, s, us) => {
                    Value::Time(clamp_time(neg, days, h, m, s, us))
                }
                other => text_fallback(other),
            },
            ColumnKind::Text(enc) => match v {
                MyValue::Bytes(b) => Value::S(enc.decode(b)),
                other => text_fallback(other),
            },
            ColumnKind::Json => match v {
                MyValue::Bytes(b) => Value::S(bytes_to_string(b)),
                other => text_fallback(other),
            },
            ColumnKind::Binary => match v {
                MyValue::Bytes(b) => Value::B(b),
                other => text_fallback(other),
            },
            ColumnKind::Enum(members) => match v {
                // Index 0 is the empty "invalid value" member MySQL stores for bad input.
                MyValue::Int(i) => Value::S(member(members, i).unwrap_or_default()),
                MyValue::UInt(u) => Value::S(member(members, u as i64).unwrap_or_default()),
                MyValue::Bytes(b) => Value::S(bytes_to_string(b)),
                other => text_fallback(other),
            },
            ColumnKind::Set(members) => match v {
                MyValue::Bytes(b) if !members.is_empty() => Value::S(set_text(members, &b)),
                MyValue::Bytes(b) => Value::S(bytes_to_string(b)),
                MyValue::Int(i) => Value::S(set_text(members, &i.to_le_bytes())),
                MyValue::UInt(u) => Value::S(set_text(members, &u.to_le_bytes())),
                other => text_fallback(other),
            },
            ColumnKind::Bit => match v {
                MyValue::Bytes(b) => {
                    let n = b
                        .iter()
                        .take(8)
                        .fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte));
                    unsigned(n)
                }
                other => int_value(other),
            },
        }
    }
}

/// Converts a binlog value (which may be MySQL binary JSON) to a [`Value`].
pub fn convert_binlog(kind: &ColumnKind, v: mysql_async::binlog::value::BinlogValue<'_>) -> Value {
    use mysql_async::binlog::value::BinlogValue;
    match v {
        BinlogValue::Value(v) => kind.convert(v),
        BinlogValue::Jsonb(j) => match serde_json::Value::try_from(j) {
            Ok(json) => Value::S(json.to_string()),
            Err(_) => Value::Null,
        },
        // Partial JSON updates only exist with binlog_row_value_options=PARTIAL_JSON,
        // which full row images exclude.
        BinlogValue::JsonDiff(_) => Value::Null,
    }
}

fn member(members: &[String], index: i64) -> Option<String> {
    if index < 1 {
        return None;
    }
    members.get(usize::try_from(index - 1).ok()?).cloned()
}

fn set_text(members: &[String], mask: &[u8]) -> String {
    let mut out: Vec<&str> = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let byte = mask.get(i / 8).copied().unwrap_or(0);
        if byte & (1 << (i % 8)) != 0 {
            out.push(m);
        }
    }
    out.join(",")
}

fn unsigned(n: u64) -> Value {
    match i64::try_from(n) {
        Ok(i) => Value::I(i),
        Err(_) => Value::U(n),
    }
}

fn int_value(v: MyValue) -> Value {
    match v {
        MyValue::Int(i) => Value::I(i),
        MyValue::UInt(u) => unsigned(u),
        MyValue::Bytes(b) => {
            let s = bytes_to_string(b);
            if let Ok(i) = s.parse::<i64>() {
                Value::I(i)
            } else if let Ok(u) = s.parse::<u64>() {
                Value::U(u)
            } else {
                Value::S(s)
            }
        }
        other => text_fallback(other),
    }
}

fn float_value(v: MyValue) -> Value {
    match v {
        MyValue::Float(f) => Value::F(f32_to_f64(f)),
        MyValue::Double(d) => Value::F(d),
        MyValue::Int(i) => Value::F(i as f64),
        MyValue::UInt(u) => Value::F(u as f64),
        MyValue::Bytes(b) => {
            let s = bytes_to_string(b);
            s.parse::<f64>().map(Value::F).unwrap_or(Value::S(s))
        }
        other => text_fallback(other),
    }
}

fn f32_to_f64(f: f32) -> f64 {
    format!("{f}").parse::<f64>().unwrap_or(f64::from(f))
}

fn decimal_value(v: MyValue) -> Value {
    match v {
        MyValue::Bytes(b) => {
            let s = bytes_to_string(b);
            // DECIMALs wider than 28 significant digits do not fit rust_decimal;
            // they are kept as their exact text.
            s.parse::<Decimal>().map(Value::D).unwrap_or(Value::S(s))
        }
        MyValue::Int(i) => Value::D(Decimal::from(i)),
        MyValue::UInt(u) => Value::D(Decimal::from(u)),
        other => text_fallback(other),
    }
}

/// TIMESTAMP values: epoch seconds (`"sec"` / `"sec.micros"` text or an
/// integer) in the binlog, a broken-down UTC time in result sets (the
/// snapshot session runs with `time_zone = '+00:00'`). The zero timestamp is NULL.
fn timestamp_value(v: MyValue) -> Value {
    match v {
        MyValue::Int(secs) => epoch(secs, 0),
        MyValue::UInt(secs) => i64::try_from(secs)
            .map(|s| epoch(s, 0))
            .unwrap_or(Value::Null),
        MyValue::Bytes(b) => {
            let s = bytes_to_string(b);
            let (secs, frac) = s.split_once('.').unwrap_or((s.as_str(), "0"));
            match (secs.parse::<i64>(), parse_micros(frac)) {
                (Ok(secs), Some(us)) => epoch(secs, us),
                _ => Value::S(s),
            }
        }
        MyValue::Date(y, m, d, h, mi, s, us) => datetime(y, m, d, h, mi, s, us)
            .map(Value::Dt)
            .unwrap_or(Value::Null),
        other => text_fallback(other),
    }
}

fn parse_micros(frac: &str) -> Option<u32> {
    if frac.is_empty() || frac.len() > 6 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let padded = format!("{frac:0<6}");
    padded.parse().ok()
}

fn epoch(secs: i64, micros: u32) -> Value {
    if secs == 0 && micros == 0 {
        return Value::Null;
    }
    DateTime::from_timestamp(secs, micros * 1000)
        .map(|dt| Value::Dt(dt.naive_utc()))
        .unwrap_or(Value::Null)
}

fn date(y: u16, m: u8, d: u8) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(i32::from(y), u32::from(m), u32::from(d))
}

fn datetime(y: u16, m: u8, d: u8, h: u8, mi: u8, s: u8, us: u32) -> Option<NaiveDateTime> {
    let t = NaiveTime::from_hms_micro_opt(u32::from(h), u32::from(mi), u32::from(s), us)?;
    Some(date(y, m, d)?.and_time(t))
}

/// TIME is a duration in MySQL (-838:59:59 … 838:59:59); as a time of day
/// negative values clamp to 00:00:00 and values past a day to 23:59:59.999999.
fn clamp_time(neg: bool, days: u32, h: u8, m: u8, s: u8, us: u32) -> NaiveTime {
    if neg {
        return NaiveTime::MIN;
    }
    let hours = days.saturating_mul(24).saturating_add(u32::from(h));
    if hours >= 24 {
        return NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap_or(NaiveTime::MIN);
    }
    NaiveTime::from_hms_micro_opt(hours, u32::from(m), u32::from(s), us).unwrap_or(NaiveTime::MIN)
}

fn bytes_to_string(b: Vec<u8>) -> String {
    match String::from_utf8(b) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// A value whose wire form does not match the column kind (never seen with
/// the servers we support): kept as text rather than dropped.
fn text_fallback(v: MyValue) -> Value {
    match v {
        MyValue::NULL => Value::Null,
        MyValue::Bytes(b) => Value::S(bytes_to_string(b)),
        MyValue::Int(i) => Value::I(i),
        MyValue::UInt(u) => unsigned(u),
        MyValue::Float(f) => Value::F(f32_to_f64(f)),
        MyValue::Double(d) => Value::F(d),
        MyValue::Date(y, m, d, h, mi, s, us) => datetime(y, m, d, h, mi, s, us)
            .map(Value::Dt)
            .unwrap_or(Value::Null),
        MyValue::Time(neg, days, h, m, s, us) => Value::Time(clamp_time(neg, days, h, m, s, us)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kind(ty: ColumnType) -> ColumnKind {
        ColumnKind::from_type(ty, ColumnFlags::empty(), TextEncoding::Utf8, vec![])
    }

    #[test]
    fn integers_keep_sign_and_big_unsigned_become_u() {
        let k = kind(ColumnType::MYSQL_TYPE_LONGLONG);
        assert_eq!(k.convert(MyValue::Int(-5)), Value::I(-5));
        assert_eq!(k.convert(MyValue::UInt(7)), Value::I(7));
        assert_eq!(k.convert(MyValue::UInt(u64::MAX)), Value::U(u64::MAX));
        assert_eq!(k.convert(MyValue::NULL), Value::Null);
    }

    #[test]
    fn decimals_are_exact() {
        let k = kind(ColumnType::MYSQL_TYPE_NEWDECIMAL);
        let v = k.convert(MyValue::Bytes(b"12.30".to_vec()));
        assert_eq!(v, Value::D("12.30".parse().unwrap()));
        if let Value::D(d) = v {
            assert_eq!(d.to_string(), "12.30");
        }
        let wide = "1234567890123456789012345678901234.5";
        assert_eq!(
            k.convert(MyValue::Bytes(wide.as_bytes().to_vec())),
            Value::S(wide.into())
        );
    }

    #[test]
    fn floats_round_trip_their_shortest_text() {
        assert_eq!(
            kind(ColumnType::MYSQL_TYPE_FLOAT).convert(MyValue::Float(0.1)),
            Value::F(0.1)
        );
        assert_eq!(
            kind(ColumnType::MYSQL_TYPE_DOUBLE).convert(MyValue::Double(2.5)),
            Value::F(2.5)
        );
    }

    #[test]
    fn dates_datetimes_and_zero_dates() {
        let d = kind(ColumnType::MYSQL_TYPE_DATE);
        assert_eq!(
            d.convert(MyValue::Date(2026, 11, 21, 0, 0, 0, 0)),
            Value::Date(NaiveDate::from_ymd_opt(2026, 11, 21).unwrap())
        );
        assert_eq!(d.convert(MyValue::Date(0, 0, 0, 0, 0, 0, 0)), Value::Null);
        let dt = kind(ColumnType::MYSQL_TYPE_DATETIME2);
        assert_eq!(
            dt.convert(MyValue::Date(2026, 11, 21, 9, 5, 1, 250_000)),
            Value::Dt(
                NaiveDate::from_ymd_opt(2026, 11, 21)
                    .unwrap()
                    .and_hms_micro_opt(9, 5, 1, 250_000)
                    .unwrap()
            )
        );
    }

    #[test]
    fn timestamps_from_binlog_epoch_text_and_result_sets_agree() {
        let k = kind(ColumnType::MYSQL_TYPE_TIMESTAMP2);
        let expected = Value::Dt(
            NaiveDate::from_ymd_opt(2023, 11, 14)
                .unwrap()
                .and_hms_micro_opt(22, 13, 20, 500_000)
                .unwrap(),
        );
        assert_eq!(
            k.convert(MyValue::Bytes(b"1700000000.500000".to_vec())),
            expected
        );
        assert_eq!(
            k.convert(MyValue::Date(2023, 11, 14, 22, 13, 20, 500_000)),
            expected
        );
        assert_eq!(
            k.convert(MyValue::Bytes(b"1700000000.5".to_vec())),
            expected
        );
        assert_eq!(k.convert(MyValue::Bytes(b"0".to_vec())), Value::Null);
        assert_eq!(k.convert(MyValue::Int(0)), Value::Null);
    }

    #[test]
    fn times_clamp_to_a_day() {
        let k = kind(ColumnType::MYSQL_TYPE_TIME2);
        assert_eq!(
            k.convert(MyValue::Time(false, 0, 10, 30, 0, 0)),
            Value::Time(NaiveTime::from_hms_opt(10, 30, 0).unwrap())
        );
        assert_eq!(
            k.convert(MyValue::Time(false, 2, 1, 0, 0, 0)),
            Value::Time(NaiveTime::from_hms_micro_opt(23, 59, 59, 999_999).unwrap())
        );
        assert_eq!(
            k.convert(MyValue::Time(true, 0, 1, 0, 0, 0)),
            Value::Time(NaiveTime::MIN)
        );
    }

    #[test]
    fn strings_blobs_enums_sets_bits() {
        let collations = Collations::default();
        let text = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_BLOB,
            ColumnFlags::empty(),
            collations.encoding(45),
            vec![],
        );
        assert_eq!(text, ColumnKind::Text(TextEncoding::Utf8));
        assert_eq!(
            text.convert(MyValue::Bytes("héllo".as_bytes().to_vec())),
            Value::S("héllo".into())
        );
        let latin1 = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_VARCHAR,
            ColumnFlags::empty(),
            collations.encoding(8),
            vec![],
        );
        assert_eq!(
            latin1.convert(MyValue::Bytes(vec![b'h', 0xE9, 0x80])),
            Value::S("hé€".into())
        );
        let blob = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_BLOB,
            ColumnFlags::empty(),
            collations.encoding(BINARY_CHARSET),
            vec![],
        );
        assert_eq!(
            blob.convert(MyValue::Bytes(vec![0, 255])),
            Value::B(vec![0, 255])
        );
        let members = vec![
            "new".to_string(),
            "paid".to_string(),
            "refunded".to_string(),
        ];
        let e = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_ENUM,
            ColumnFlags::empty(),
            TextEncoding::Utf8,
            members.clone(),
        );
        assert_eq!(e.convert(MyValue::Int(2)), Value::S("paid".into()));
        assert_eq!(e.convert(MyValue::Int(0)), Value::S(String::new()));
        assert_eq!(
            e.convert(MyValue::Bytes(b"paid".to_vec())),
            Value::S("paid".into())
        );
        let s = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_SET,
            ColumnFlags::empty(),
            TextEncoding::Utf8,
            members,
        );
        assert_eq!(
            s.convert(MyValue::Bytes(vec![0b101])),
            Value::S("new,refunded".into())
        );
        // Result sets carry ENUM/SET text with the binary flag on some servers.
        let rs = ColumnKind::from_type(
            ColumnType::MYSQL_TYPE_STRING,
            ColumnFlags::ENUM_FLAG,
            TextEncoding::Binary,
            vec![],
        );
        assert_eq!(rs, ColumnKind::Text(TextEncoding::Utf8));
        let bit = kind(ColumnType::MYSQL_TYPE_BIT);
        assert_eq!(bit.convert(MyValue::Bytes(vec![1, 2])), Value::I(258));
        let year = kind(ColumnType::MYSQL_TYPE_YEAR);
        assert_eq!(
            year.convert(MyValue::Bytes(b"2026".to_vec())),
            Value::I(2026)
        );
        assert_eq!(year.convert(MyValue::Int(2026)), Value::I(2026));
    }
}
