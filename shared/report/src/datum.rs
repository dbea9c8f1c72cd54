//! The engine's runtime value: an [`mdp_types::Value`] plus MySQL's display
//! scale for decimals, with MySQL's conversion and comparison rules.
//!
//! Decimals carry two scales, as in MySQL: the exact value (whose own scale
//! may be larger, e.g. a division keeps 9 fractional digits per 9-digit word)
//! and the display scale the column is declared with (`a / b` shows
//! `scale(a) + 4` digits). Values leave the engine rounded to the display
//! scale, half away from zero.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use mdp_types::Value;
use rust_decimal::prelude::{FromPrimitive, ToPrimitive};
use rust_decimal::{Decimal, RoundingStrategy};
use std::cmp::Ordering;

/// Largest scale a decimal can hold.
pub(crate) const MAX_SCALE: u32 = 28;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Datum {
    Null,
    Int(i64),
    UInt(u64),
    /// Exact value and display scale.
    Dec(Decimal, u32),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Date(NaiveDate),
    DateTime(NaiveDateTime),
    Time(NaiveTime),
}

/// A number for arithmetic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Num {
    Int(i64),
    UInt(u64),
    Dec(Decimal, u32),
    Float(f64),
}

impl Num {
    pub(crate) fn into_datum(self) -> Datum {
        match self {
            Num::Int(i) => Datum::Int(i),
            Num::UInt(u) => Datum::UInt(u),
            Num::Dec(d, s) => Datum::Dec(d, s),
            Num::Float(f) => Datum::Float(f),
        }
    }

    /// Exact value of an integer or decimal.
    pub(crate) fn exact(&self) -> Option<Decimal> {
        match *self {
            Num::Int(i) => Some(Decimal::from(i)),
            Num::UInt(u) => Some(Decimal::from(u)),
            Num::Dec(d, _) => Some(d),
            Num::Float(_) => None,
        }
    }

    pub(crate) fn to_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::UInt(u) => u as f64,
            Num::Dec(d, _) => d.to_f64().unwrap_or(0.0),
            Num::Float(f) => f,
        }
    }

    /// Display scale (0 for integers).
    pub(crate) fn scale(&self) -> u32 {
        match *self {
            Num::Dec(_, s) => s,
            _ => 0,
        }
    }

    pub(crate) fn is_zero(&self) -> bool {
        match *self {
            Num::Int(i) => i == 0,
            Num::UInt(u) => u == 0,
            Num::Dec(d, _) => d.is_zero(),
            Num::Float(f) => f == 0.0,
        }
    }
}

impl Datum {
    pub(crate) fn from_value(v: &Value) -> Datum {
        match v {
            Value::Null => Datum::Null,
            Value::I(i) => Datum::Int(*i),
            Value::U(u) => match i64::try_from(*u) {
                Ok(i) => Datum::Int(i),
                Err(_) => Datum::UInt(*u),
            },
            Value::F(f) => Datum::Float(*f),
            Value::D(d) => Datum::Dec(*d, d.scale()),
            Value::S(s) => Datum::Str(s.clone()),
            Value::B(b) => Datum::Bytes(b.clone()),
            Value::Date(d) => Datum::Date(*d),
            Value::Dt(dt) => Datum::DateTime(*dt),
            Value::Time(t) => Datum::Time(*t),
        }
    }

    /// The value as served: decimals rounded to their display scale.
    pub(crate) fn to_value(&self) -> Value {
        match self {
            Datum::Null => Value::Null,
            Datum::Int(i) => Value::I(*i),
            Datum::UInt(u) => match i64::try_from(*u) {
                Ok(i) => Value::I(i),
                Err(_) => Value::U(*u),
            },
            Datum::Dec(d, s) => Value::D(round_to_scale(*d, *s)),
            Datum::Float(f) => Value::F(if *f == 0.0 { 0.0 } else { *f }),
            Datum::Str(s) => Value::S(s.clone()),
            Datum::Bytes(b) => Value::B(b.clone()),
            Datum::Date(d) => Value::Date(*d),
            Datum::DateTime(dt) => Value::Dt(*dt),
            Datum::Time(t) => Value::Time(*t),
        }
    }

    /// The value as a group key: what MySQL stores in its grouping table
    /// (decimals at display scale).
    pub(crate) fn normalized(self) -> Datum {
        match self {
            Datum::Dec(d, s) => Datum::Dec(round_to_scale(d, s), s),
            Datum::UInt(u) => match i64::try_from(u) {
                Ok(i) => Datum::Int(i),
                Err(_) => Datum::UInt(u),
            },
            // -0.0 and 0.0 are one key.
            Datum::Float(f) => Datum::Float(if f == 0.0 { 0.0 } else { f }),
            other => other,
        }
    }

    pub(crate) fn is_null(&self) -> bool {
        matches!(self, Datum::Null)
    }

    pub(crate) fn bool(b: bool) -> Datum {
        Datum::Int(i64::from(b))
    }

    pub(crate) fn opt_bool(b: Option<bool>) -> Datum {
        b.map_or(Datum::Null, Datum::bool)
    }

    pub(crate) fn is_temporal(&self) -> bool {
        matches!(self, Datum::Date(_) | Datum::DateTime(_) | Datum::Time(_))
    }

    /// SQL truth value: NULL is unknown, numbers are true when non-zero,
    /// strings by their numeric prefix.
    pub(crate) fn truth(&self) -> Option<bool> {
        match self {
            Datum::Null => None,
            Datum::Date(_) | Datum::DateTime(_) => Some(true),
            Datum::Time(t) => Some(*t != NaiveTime::MIN),
            other => other.to_num().map(|n| !n.is_zero()),
        }
    }

    /// The number MySQL uses in arithmetic: strings become DOUBLE from their
    /// numeric prefix (`'12abc'` → 12, `'abc'` → 0), dates become `YYYYMMDD`.
    pub(crate) fn to_num(&self) -> Option<Num> {
        Some(match self {
            Datum::Null => return None,
            Datum::Int(i) => Num::Int(*i),
            Datum::UInt(u) => Num::UInt(*u),
            Datum::Dec(d, s) => Num::Dec(*d, *s),
            Datum::Float(f) => Num::Float(*f),
            Datum::Str(s) => Num::Float(parse_f64_prefix(s)),
            Datum::Bytes(b) => Num::Float(parse_f64_prefix(&String::from_utf8_lossy(b))),
            Datum::Date(d) => Num::Int(date_number(d)),
            Datum::DateTime(dt) => {
                let n = date_number(&dt.date()) * 1_000_000 + time_number(&dt.time());
                let micros = dt.nanosecond() / 1000 % 1_000_000;
                if micros == 0 {
                    Num::Int(n)
                } else {
                    Num::Dec(Decimal::from(n) + Decimal::new(i64::from(micros), 6), 6)
                }
            }
            Datum::Time(t) => Num::Int(time_number(t)),
        })
    }

    /// The text MySQL shows for the value (`CONCAT`, string comparison).
    pub(crate) fn to_text(&self) -> Option<String> {
        Some(match self {
            Datum::Null => return None,
            Datum::Int(i) => i.to_string(),
            Datum::UInt(u) => u.to_string(),
            Datum::Dec(d, s) => decimal_text(*d, *s),
            Datum::Float(f) => float_text(*f),
            Datum::Str(s) => s.clone(),
            Datum::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
            Datum::Date(d) => d.format("%Y-%m-%d").to_string(),
            Datum::DateTime(dt) => mdp_types::value::format_datetime(dt),
            Datum::Time(t) => {
                if t.nanosecond() == 0 {
                    t.format("%H:%M:%S").to_string()
                } else {
                    t.format("%H:%M:%S%.6f").to_string()
                }
            }
        })
    }

    /// The value as a DATETIME (dates at midnight, strings and numbers parsed
    /// the way MySQL does); `None` when it is not a valid date.
    pub(crate) fn to_datetime(&self) -> Option<NaiveDateTime> {
        match self {
            Datum::Date(d) => Some(d.and_time(NaiveTime::MIN)),
            Datum::DateTime(dt) => Some(*dt),
            Datum::Str(s) => parse_datetime(s),
            Datum::Bytes(b) => parse_datetime(&String::from_utf8_lossy(b)),
            Datum::Int(i) => datetime_from_number(*i),
            Datum::UInt(u) => i64::try_from(*u).ok().and_then(datetime_from_number),
            Datum::Dec(d, _) => d.trunc().to_i64().and_then(datetime_from_number),
            Datum::Float(f) => datetime_from_number(f.trunc() as i64),
            Datum::Null | Datum::Time(_) => None,
        }
    }

    pub(crate) fn to_date(&self) -> Option<NaiveDate> {
        self.to_datetime().map(|dt| dt.date())
    }

    /// The time of day (TIME values, the time part of datetimes, time text).
    pub(crate) fn to_time(&self) -> Option<NaiveTime> {
        match self {
            Datum::Time(t) => Some(*t),
            Datum::DateTime(dt) => Some(dt.time()),
            Datum::Date(_) => Some(NaiveTime::MIN),
            Datum::Str(s) => parse_time(s),
            Datum::Bytes(b) => parse_time(&String::from_utf8_lossy(b)),
            Datum::Int(_) | Datum::UInt(_) | Datum::Dec(..) | Datum::Float(_) => {
                let n = match self.to_num()? {
                    Num::Float(f) if f.is_finite() && f.abs() < 9.2e18 => f.trunc() as i64,
                    other => other.exact()?.trunc().to_i64()?,
                };
                if n >= 1_000_000 {
                    return datetime_from_number(n).map(|dt| dt.time());
                }
                let n = n.unsigned_abs();
                NaiveTime::from_hms_opt(
                    u32::try_from(n / 10_000).ok()?,
                    (n / 100 % 100) as u32,
                    (n % 100) as u32,
                )
            }
            Datum::Null => None,
        }
    }
}

/// `d` rounded half away from zero to exactly `scale` fractional digits.
pub(crate) fn round_to_scale(d: Decimal, scale: u32) -> Decimal {
    let scale = scale.min(MAX_SCALE);
    let mut r = d.round_dp_with_strategy(scale, RoundingStrategy::MidpointAwayFromZero);
    if r.scale() < scale {
        r.rescale(scale);
    }
    r
}

/// Decimal text with exactly `scale` digits (MySQL shows declared scale).
pub(crate) fn decimal_text(d: Decimal, scale: u32) -> String {
    round_to_scale(d, scale).to_string()
}

/// DOUBLE as text the way MySQL prints it: shortest round trip, exponent
/// form for very large or very small magnitudes.
pub(crate) fn float_text(f: f64) -> String {
    if f == 0.0 {
        return "0".to_string();
    }
    if !f.is_finite() {
        return "NULL".to_string();
    }
    let a = f.abs();
    if (1e-15..1e15).contains(&a) {
        format!("{f}")
    } else {
        format!("{f:e}")
    }
}

/// MySQL's string → number conversion: the longest numeric prefix after
/// leading spaces, 0 when there is none.
pub(crate) fn parse_f64_prefix(s: &str) -> f64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r']);
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let digits_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let mut end = i;
    if i < b.len() && b[i] == b'.' {
        let mut j = i + 1;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > i + 1 || i > digits_start {
            end = j;
        }
        i = j;
    }
    if end == digits_start {
        return 0.0;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        let exp_start = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > exp_start {
            end = j;
        }
    }
    t[..end].parse::<f64>().unwrap_or(0.0)
}

/// The integer prefix of a string (`CAST('12.9x' AS SIGNED)` → 12).
pub(crate) fn parse_i64_prefix(s: &str) -> i64 {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r']);
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    match t[..i].parse::<i64>() {
        Ok(v) => v,
        Err(_) => {
            if t.starts_with('-') && i > 1 {
                i64::MIN
            } else if i > 0 && t[..i].bytes().any(|c| c.is_ascii_digit()) {
                i64::MAX
            } else {
                0
            }
        }
    }
}

/// The decimal value of a string's numeric prefix (exact, for
/// `CAST(s AS DECIMAL)`).
pub(crate) fn parse_decimal_prefix(s: &str) -> Decimal {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r']);
    let b = t.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    if i < b.len() && b[i] == b'.' {
        i += 1;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
    }
    let prefix = t[..i].trim_end_matches('.');
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        return Decimal::from_f64(parse_f64_prefix(t)).unwrap_or(Decimal::ZERO);
    }
    prefix.parse::<Decimal>().unwrap_or(Decimal::ZERO)
}

fn date_number(d: &NaiveDate) -> i64 {
    i64::from(d.year()) * 10_000 + i64::from(d.month()) * 100 + i64::from(d.day())
}

fn time_number(t: &NaiveTime) -> i64 {
    i64::from(t.hour()) * 10_000 + i64::from(t.minute()) * 100 + i64::from(t.second())
}

/// `YYYYMMDD` or `YYYYMMDDhhmmss` (also 6/12-digit forms with 2-digit years).
fn datetime_from_number(n: i64) -> Option<NaiveDateTime> {
    if n <= 0 {
        return None;
    }
    let (date, time) = if n >= 10_000_000_000 {
        (n / 1_000_000, n % 1_000_000)
    } else {
        (n, 0)
    };
    let (y, m, d) = if date >= 10_000_000 {
        (date / 10_000, date / 100 % 100, date % 100)
    } else if (100..1_000_000).contains(&date) {
        let yy = date / 10_000;
        (
            if yy < 70 { 2000 + yy } else { 1900 + yy },
            date / 100 % 100,
            date % 100,
        )
    } else {
        return None;
    };
    let day = NaiveDate::from_ymd_opt(
        i32::try_from(y).ok()?,
        u32::try_from(m).ok()?,
        u32::try_from(d).ok()?,
    )?;
    let t = NaiveTime::from_hms_opt(
        (time / 10_000) as u32,
        (time / 100 % 100) as u32,
        (time % 100) as u32,
    )?;
    Some(day.and_time(t))
}

/// Parses MySQL date/datetime text: `YYYY-MM-DD`, `YYYY-MM-DD HH:MM:SS[.ffffff]`
/// (`T` also separates), any punctuation as delimiter, or the digit-only
/// forms. Trailing garbage after a valid prefix is ignored as MySQL does
/// (with a warning there).
pub(crate) fn parse_datetime(s: &str) -> Option<NaiveDateTime> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return match s.len() {
            8 | 14 => datetime_from_number(s.parse().ok()?),
            6 | 12 => datetime_from_number(s.parse().ok()?),
            _ => None,
        };
    }
    // Split into numeric fields separated by any non-digit delimiters.
    let b = s.as_bytes();
    let mut fields: Vec<(u64, usize)> = Vec::with_capacity(7); // (value, digit count)
    let mut i = 0;
    let mut frac: Option<(u64, usize)> = None;
    while i < b.len() && fields.len() < 6 {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start {
            return None;
        }
        let v: u64 = s[start..i].parse().ok()?;
        fields.push((v, i - start));
        if i >= b.len() {
            break;
        }
        // Delimiter: one punctuation char, or spaces/T between date and time.
        if fields.len() == 3 {
            if b[i] == b'T' || b[i] == b' ' {
                while i < b.len() && (b[i] == b' ' || b[i] == b'T') {
                    i += 1;
                }
                continue;
            }
            if !b[i].is_ascii_punctuation() {
                break;
            }
            i += 1;
        } else if fields.len() == 6 {
            break;
        } else {
            if !(b[i].is_ascii_punctuation() || b[i] == b' ') {
                break;
            }
            i += 1;
        }
    }
    if fields.len() == 6 && i < b.len() && b[i] == b'.' {
        let start = i + 1;
        let mut j = start;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if j > start {
            let digits = &s[start..j.min(start + 6)];
            frac = Some((digits.parse().ok()?, digits.len()));
        }
    }
    if fields.len() < 3 {
        return None;
    }
    let mut year = fields[0].0 as i64;
    if fields[0].1 <= 2 {
        year += if year < 70 { 2000 } else { 1900 };
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(year).ok()?,
        fields[1].0 as u32,
        fields[2].0 as u32,
    )?;
    let h = fields.get(3).map_or(0, |f| f.0) as u32;
    let mi = fields.get(4).map_or(0, |f| f.0) as u32;
    let se = fields.get(5).map_or(0, |f| f.0) as u32;
    let micros = frac.map_or(0, |(v, n)| v as u32 * 10u32.pow(6 - n as u32));
    let t = NaiveTime::from_hms_micro_opt(h, mi, se, micros)?;
    Some(date.and_time(t))
}

/// Parses time text `HH:MM[:SS[.ffffff]]`, or the time part of datetime text.
pub(crate) fn parse_time(s: &str) -> Option<NaiveTime> {
    let s = s.trim();
    if let Some(dt) = parse_datetime(s) {
        if s.contains(['-', '/']) || s.len() >= 8 && s.bytes().all(|b| b.is_ascii_digit()) {
            return Some(dt.time());
        }
    }
    let (main, frac) = match s.split_once('.') {
        Some((m, f)) => (m, Some(f)),
        None => (s, None),
    };
    let parts: Vec<&str> = main.split(':').collect();
    let num = |p: &str| p.trim().parse::<u32>().ok();
    let (h, m, sec) = match parts.len() {
        3 => (num(parts[0])?, num(parts[1])?, num(parts[2])?),
        2 => (num(parts[0])?, num(parts[1])?, 0),
        1 => {
            let n = num(parts[0])?;
            (n / 10_000, n / 100 % 100, n % 100)
        }
        _ => return None,
    };
    let micros = match frac {
        Some(f) => {
            let digits: String = f.chars().take_while(char::is_ascii_digit).take(6).collect();
            if digits.is_empty() {
                0
            } else {
                digits.parse::<u32>().ok()? * 10u32.pow(6 - digits.len() as u32)
            }
        }
        None => 0,
    };
    NaiveTime::from_hms_micro_opt(h, m, sec, micros)
}

/// The collation key of a string under MySQL's default `utf8mb4_general_ci`:
/// case-insensitive (simple upper-case folding) and trailing spaces ignored.
pub(crate) fn collate_key(s: &str) -> String {
    s.trim_end_matches(' ')
        .chars()
        .map(|c| c.to_uppercase().next().unwrap_or(c))
        .collect()
}

/// Compares two strings under the default collation.
pub(crate) fn collate_cmp(a: &str, b: &str) -> Ordering {
    let a = a.trim_end_matches(' ');
    let b = b.trim_end_matches(' ');
    let fold = |c: char| c.to_uppercase().next().unwrap_or(c);
    a.chars().map(fold).cmp(b.chars().map(fold))
}

/// Exact comparison of two numbers (float when either is a float).
pub(crate) fn num_cmp(a: Num, b: Num) -> Ordering {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => x.cmp(&y),
        (Num::Float(_), _) | (_, Num::Float(_)) => {
            let (x, y) = (a.to_f64(), b.to_f64());
            x.partial_cmp(&y).unwrap_or_else(|| x.total_cmp(&y))
        }
        _ => match (a.exact(), b.exact()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => Ordering::Equal,
        },
    }
}

/// SQL comparison with MySQL's conversion rules; `None` when either side is
/// NULL (or a temporal value cannot be compared with the other side).
pub(crate) fn sql_cmp(a: &Datum, b: &Datum) -> Option<Ordering> {
    use Datum as D;
    if a.is_null() || b.is_null() {
        return None;
    }
    match (a, b) {
        (D::Str(x), D::Str(y)) => Some(collate_cmp(x, y)),
        (D::Bytes(x), D::Bytes(y)) => Some(x.cmp(y)),
        (D::Str(_) | D::Bytes(_), D::Str(_) | D::Bytes(_)) => {
            Some(a.to_text()?.as_bytes().cmp(b.to_text()?.as_bytes()))
        }
        (D::Time(x), D::Time(y)) => Some(x.cmp(y)),
        (D::Time(x), D::Str(_)) => Some(x.cmp(&b.to_time()?)),
        (D::Str(_), D::Time(y)) => Some(a.to_time()?.cmp(y)),
        (D::Date(_) | D::DateTime(_), D::Date(_) | D::DateTime(_) | D::Str(_) | D::Bytes(_))
        | (D::Str(_) | D::Bytes(_), D::Date(_) | D::DateTime(_)) => {
            match (a.to_datetime(), b.to_datetime()) {
                (Some(x), Some(y)) => Some(x.cmp(&y)),
                // Text that is not a date: compare as text.
                _ => Some(collate_cmp(&a.to_text()?, &b.to_text()?)),
            }
        }
        _ => Some(num_cmp(a.to_num()?, b.to_num()?)),
    }
}

/// Equality for IN lists and simple CASE, with the same rules.
pub(crate) fn sql_eq(a: &Datum, b: &Datum) -> Option<bool> {
    sql_cmp(a, b).map(|o| o == Ordering::Equal)
}

/// The common type of several values (CASE branches, IF, COALESCE …), as
/// MySQL aggregates result types: any string makes a string, any float a
/// float, any decimal a decimal with the largest scale, dates with
/// datetimes make datetimes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Common {
    Int,
    Dec(u32),
    Float,
    Str,
    Date,
    DateTime,
    Time,
    Keep,
}

pub(crate) fn common_type<'a>(values: impl IntoIterator<Item = &'a Datum>) -> Common {
    let mut any = false;
    let (mut s, mut f, mut dec, mut int, mut date, mut dt, mut time) =
        (false, false, None::<u32>, false, false, false, false);
    for v in values {
        if v.is_null() {
            continue;
        }
        any = true;
        match v {
            Datum::Null => {}
            Datum::Int(_) | Datum::UInt(_) => int = true,
            Datum::Dec(_, sc) => dec = Some(dec.map_or(*sc, |x: u32| x.max(*sc))),
            Datum::Float(_) => f = true,
            Datum::Str(_) | Datum::Bytes(_) => s = true,
            Datum::Date(_) => date = true,
            Datum::DateTime(_) => dt = true,
            Datum::Time(_) => time = true,
        }
    }
    if !any {
        return Common::Keep;
    }
    let numeric = int || dec.is_some() || f;
    let temporal = date || dt || time;
    if s || (numeric && temporal) || (time && (date || dt)) {
        return Common::Str;
    }
    if temporal {
        return if time {
            Common::Time
        } else if dt {
            Common::DateTime
        } else {
            Common::Date
        };
    }
    if f {
        Common::Float
    } else if let Some(sc) = dec {
        Common::Dec(sc)
    } else if int {
        Common::Int
    } else {
        Common::Keep
    }
}

/// Converts `v` to the common type `c` (values already of that type are
/// returned as they are).
pub(crate) fn coerce(v: Datum, c: Common) -> Datum {
    if v.is_null() {
        return v;
    }
    match c {
        Common::Keep | Common::Int => v,
        Common::Dec(s) => match v {
            Datum::Int(i) => Datum::Dec(Decimal::from(i), s),
            Datum::UInt(u) => Datum::Dec(Decimal::from(u), s),
            Datum::Dec(d, _) => Datum::Dec(d, s),
            other => other,
        },
        Common::Float => match v.to_num() {
            Some(n) => Datum::Float(n.to_f64()),
            None => v,
        },
        Common::Str => match v {
            Datum::Str(_) | Datum::Bytes(_) => v,
            other => other.to_text().map_or(Datum::Null, Datum::Str),
        },
        Common::DateTime => match v {
            Datum::Date(d) => Datum::DateTime(d.and_time(NaiveTime::MIN)),
            other => other,
        },
        Common::Date | Common::Time => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    #[test]
    fn strings_convert_to_numbers_by_prefix() {
        assert_eq!(parse_f64_prefix("12abc"), 12.0);
        assert_eq!(parse_f64_prefix("  -1.5e2x"), -150.0);
        assert_eq!(parse_f64_prefix("abc"), 0.0);
        assert_eq!(parse_f64_prefix(".5"), 0.5);
        assert_eq!(parse_f64_prefix("1e"), 1.0);
        assert_eq!(parse_i64_prefix("12.9"), 12);
        assert_eq!(parse_decimal_prefix("12.50abc"), dec("12.50"));
        assert_eq!(Datum::Str("abc".into()).truth(), Some(false));
        assert_eq!(Datum::Str("1abc".into()).truth(), Some(true));
    }

    #[test]
    fn datetimes_parse_like_mysql() {
        let dt = parse_datetime("2026-11-21 09:05:03").unwrap_or_default();
        assert_eq!(dt.to_string(), "2026-11-21 09:05:03");
        assert_eq!(
            parse_datetime("2026-11-21")
                .map(|d| d.to_string())
                .as_deref(),
            Some("2026-11-21 00:00:00")
        );
        assert_eq!(
            parse_datetime("2026/1/2 3:4:5")
                .map(|d| d.to_string())
                .as_deref(),
            Some("2026-01-02 03:04:05")
        );
        assert_eq!(
            parse_datetime("20261121")
                .map(|d| d.date().to_string())
                .as_deref(),
            Some("2026-11-21")
        );
        assert_eq!(
            parse_datetime("2026-11-21T10:00:00.25")
                .map(|d| d.to_string())
                .as_deref(),
            Some("2026-11-21 10:00:00.250")
        );
        assert_eq!(parse_datetime("2026-02-30"), None);
        assert_eq!(parse_datetime("paid"), None);
        assert_eq!(
            parse_time("10:05").map(|t| t.to_string()).as_deref(),
            Some("10:05:00")
        );
        assert_eq!(
            parse_time("2026-11-21 10:05:03")
                .map(|t| t.to_string())
                .as_deref(),
            Some("10:05:03")
        );
        assert_eq!(
            Datum::Int(20261121)
                .to_date()
                .map(|d| d.to_string())
                .as_deref(),
            Some("2026-11-21")
        );
    }

    #[test]
    fn comparisons_follow_mysql_conversions() {
        let s = |x: &str| Datum::Str(x.into());
        assert_eq!(sql_cmp(&s("Paid"), &s("paid")), Some(Ordering::Equal));
        assert_eq!(sql_cmp(&s("a "), &s("A")), Some(Ordering::Equal));
        assert_eq!(sql_cmp(&s("_"), &s("a")), Some(Ordering::Greater));
        assert_eq!(
            sql_cmp(&Datum::Int(2), &Datum::Dec(dec("1.99"), 2)),
            Some(Ordering::Greater)
        );
        assert_eq!(sql_cmp(&s("10"), &Datum::Int(9)), Some(Ordering::Greater));
        assert_eq!(sql_cmp(&Datum::Null, &Datum::Int(9)), None);
        let d = Datum::Date(NaiveDate::from_ymd_opt(2026, 1, 2).unwrap_or_default());
        assert_eq!(sql_cmp(&d, &s("2026-01-02")), Some(Ordering::Equal));
        assert_eq!(
            sql_cmp(&d, &s("2026-01-01 23:59:59")),
            Some(Ordering::Greater)
        );
    }

    #[test]
    fn output_rounds_to_display_scale_half_away_from_zero() {
        assert_eq!(
            Datum::Dec(dec("0.666666666"), 4).to_value(),
            Value::D(dec("0.6667"))
        );
        assert_eq!(
            Datum::Dec(dec("-0.00005"), 4).to_value(),
            Value::D(dec("-0.0001"))
        );
        assert_eq!(Datum::Dec(dec("5"), 2).to_value().key_text(), "5");
        assert_eq!(Datum::Dec(dec("5"), 2).to_text().as_deref(), Some("5.00"));
    }

    #[test]
    fn common_type_unifies_branches() {
        let vals = [Datum::Int(0), Datum::Dec(dec("1.50"), 2)];
        assert_eq!(common_type(&vals), Common::Dec(2));
        assert_eq!(
            coerce(Datum::Int(0), Common::Dec(2)).to_value(),
            Value::D(dec("0.00"))
        );
        let vals = [Datum::Int(0), Datum::Str("x".into())];
        assert_eq!(common_type(&vals), Common::Str);
        assert_eq!(coerce(Datum::Int(0), Common::Str), Datum::Str("0".into()));
    }
}
