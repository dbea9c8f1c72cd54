//! The scalar functions reports may call, with MySQL semantics.

use crate::datum::{coerce, common_type, sql_cmp, sql_eq, Datum, Num, MAX_SCALE};
use crate::eval::{arith, ArithOp};
use chrono::{Datelike, NaiveDateTime, Timelike};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::cmp::Ordering;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Func {
    If,
    IfNull,
    Coalesce,
    NullIf,
    Greatest,
    Least,
    Abs,
    Round,
    Truncate,
    Floor,
    Ceil,
    Sign,
    Mod,
    Concat,
    Lower,
    Upper,
    Date,
    Time,
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    Weekday,
    DayOfWeek,
    DayOfYear,
    Quarter,
    DateFormat,
    /// `DATE_ADD(x, INTERVAL n unit)`, `ADDDATE`.
    DateAdd(IntervalUnit),
    /// `DATE_SUB(x, INTERVAL n unit)`, `SUBDATE`.
    DateSub(IntervalUnit),
    /// `WEEK(x[, mode])`.
    Week,
    /// `YEARWEEK(x[, mode])`.
    YearWeek,
    DayName,
    MonthName,
    LastDay,
    ToDays,
    /// `DATEDIFF(a, b)`: days from `b` to `a`.
    DateDiff,
    /// `TIMESTAMPDIFF(unit, a, b)`: whole units from `a` to `b`.
    TimestampDiff(IntervalUnit),
    /// `SUBSTRING(s, pos[, len])`, `SUBSTR`, `MID`.
    Substring,
    Left,
    Right,
    /// Characters.
    CharLength,
    /// Bytes of the UTF-8 text.
    Length,
    /// `TRIM([BOTH | LEADING | TRAILING] [remstr FROM] s)`, `LTRIM`, `RTRIM`:
    /// removes `remstr` (default a space) repeated at the chosen ends.
    Trim(TrimSide),
    Replace,
    ConcatWs,
    /// `CONVERT_TZ(x, from, to)` between two fixed UTC offsets, in seconds.
    ConvertTz {
        from: i32,
        to: i32,
    },
}

/// Which ends `TRIM` removes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TrimSide {
    Both,
    Leading,
    Trailing,
}

/// The unit of `INTERVAL n unit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IntervalUnit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

impl IntervalUnit {
    /// Whether adding it to a DATE gives a DATE (else a DATETIME).
    pub(crate) fn keeps_date(self) -> bool {
        matches!(
            self,
            IntervalUnit::Day
                | IntervalUnit::Week
                | IntervalUnit::Month
                | IntervalUnit::Quarter
                | IntervalUnit::Year
        )
    }
}

impl Func {
    /// The function of a SQL name (case-insensitive), if supported.
    pub(crate) fn lookup(name: &str) -> Option<Func> {
        Some(match name.to_ascii_uppercase().as_str() {
            "IF" => Func::If,
            "IFNULL" => Func::IfNull,
            "COALESCE" => Func::Coalesce,
            "NULLIF" => Func::NullIf,
            "GREATEST" => Func::Greatest,
            "LEAST" => Func::Least,
            "ABS" => Func::Abs,
            "ROUND" => Func::Round,
            "TRUNCATE" => Func::Truncate,
            "FLOOR" => Func::Floor,
            "CEIL" | "CEILING" => Func::Ceil,
            "SIGN" => Func::Sign,
            "MOD" => Func::Mod,
            "CONCAT" => Func::Concat,
            "LOWER" | "LCASE" => Func::Lower,
            "UPPER" | "UCASE" => Func::Upper,
            "DATE" => Func::Date,
            "TIME" => Func::Time,
            "YEAR" => Func::Year,
            "MONTH" => Func::Month,
            "DAY" | "DAYOFMONTH" => Func::Day,
            "HOUR" => Func::Hour,
            "MINUTE" => Func::Minute,
            "SECOND" => Func::Second,
            "WEEKDAY" => Func::Weekday,
            "DAYOFWEEK" => Func::DayOfWeek,
            "DAYOFYEAR" => Func::DayOfYear,
            "QUARTER" => Func::Quarter,
            "DATE_FORMAT" => Func::DateFormat,
            "WEEK" => Func::Week,
            "YEARWEEK" => Func::YearWeek,
            "DAYNAME" => Func::DayName,
            "MONTHNAME" => Func::MonthName,
            "LAST_DAY" => Func::LastDay,
            "TO_DAYS" => Func::ToDays,
            "DATEDIFF" => Func::DateDiff,
            "SUBSTR" | "MID" => Func::Substring,
            "LEFT" => Func::Left,
            "RIGHT" => Func::Right,
            "CHAR_LENGTH" | "CHARACTER_LENGTH" => Func::CharLength,
            "LENGTH" | "OCTET_LENGTH" => Func::Length,
            "LTRIM" => Func::Trim(TrimSide::Leading),
            "RTRIM" => Func::Trim(TrimSide::Trailing),
            "REPLACE" => Func::Replace,
            "CONCAT_WS" => Func::ConcatWs,
            _ => return None,
        })
    }

    /// Allowed argument counts: (minimum, maximum or unbounded).
    pub(crate) fn arity(self) -> (usize, Option<usize>) {
        match self {
            Func::If => (3, Some(3)),
            Func::IfNull
            | Func::NullIf
            | Func::Mod
            | Func::Truncate
            | Func::DateFormat
            | Func::DateDiff
            | Func::TimestampDiff(_) => (2, Some(2)),
            Func::ConvertTz { .. } => (1, Some(1)),
            Func::Week | Func::YearWeek => (1, Some(2)),
            Func::Left | Func::Right => (2, Some(2)),
            Func::Substring => (2, Some(3)),
            Func::Replace => (3, Some(3)),
            Func::ConcatWs => (2, None),
            Func::Coalesce | Func::Concat => (1, None),
            Func::Greatest | Func::Least => (2, None),
            Func::Round => (1, Some(2)),
            Func::DateAdd(_) | Func::DateSub(_) => (2, Some(2)),
            _ => (1, Some(1)),
        }
    }

    /// Whether the result is of DATE type whatever the input.
    pub(crate) fn returns_date(self) -> bool {
        matches!(self, Func::Date | Func::LastDay)
    }
}

/// Calls `f` on evaluated arguments (arity was checked at compile time).
pub(crate) fn call(f: Func, mut args: Vec<Datum>) -> Datum {
    let arg = |args: &[Datum], i: usize| args.get(i).cloned().unwrap_or(Datum::Null);
    match f {
        Func::If => {
            let common = common_type(&args[1..]);
            let pick = if args[0].truth() == Some(true) { 1 } else { 2 };
            coerce(arg(&args, pick), common)
        }
        Func::IfNull | Func::Coalesce => {
            let common = common_type(&args);
            let first = args
                .into_iter()
                .find(|a| !a.is_null())
                .unwrap_or(Datum::Null);
            coerce(first, common)
        }
        Func::NullIf => {
            if sql_eq(&args[0], &args[1]) == Some(true) {
                Datum::Null
            } else {
                arg(&args, 0)
            }
        }
        Func::Greatest | Func::Least => {
            if args.iter().any(Datum::is_null) {
                return Datum::Null;
            }
            let common = common_type(&args);
            let want = if f == Func::Greatest {
                Ordering::Greater
            } else {
                Ordering::Less
            };
            // Strings mixed with numbers compare as numbers (MySQL).
            let numeric = args
                .iter()
                .any(|a| a.to_num().is_some() && !matches!(a, Datum::Str(_) | Datum::Bytes(_)))
                && args.iter().all(|a| !a.is_temporal());
            let cmp = |a: &Datum, b: &Datum| {
                if numeric {
                    match (a.to_num(), b.to_num()) {
                        (Some(x), Some(y)) => Some(crate::datum::num_cmp(x, y)),
                        _ => None,
                    }
                } else {
                    sql_cmp(a, b)
                }
            };
            let mut best = 0;
            for i in 1..args.len() {
                if cmp(&args[i], &args[best]) == Some(want) {
                    best = i;
                }
            }
            coerce(args.swap_remove(best), common)
        }
        Func::Abs => match args[0].to_num() {
            None => Datum::Null,
            Some(Num::Int(i)) => match i.checked_abs() {
                Some(v) => Datum::Int(v),
                None => Datum::Dec(Decimal::from(i).abs(), 0),
            },
            Some(Num::UInt(u)) => Datum::UInt(u),
            Some(Num::Dec(d, s)) => Datum::Dec(d.abs(), s),
            Some(Num::Float(x)) => Datum::Float(x.abs()),
        },
        Func::Round | Func::Truncate => {
            let digits = match args.get(1) {
                None => Some(0),
                Some(d) => d.to_num().map(|n| match n {
                    Num::Float(x) => x.round() as i64,
                    other => other.exact().and_then(|d| d.round().to_i64()).unwrap_or(0),
                }),
            };
            match (args[0].to_num(), digits) {
                (Some(n), Some(d)) => round(n, d.clamp(-30, 30) as i32, f == Func::Truncate),
                _ => Datum::Null,
            }
        }
        Func::Floor | Func::Ceil => match args[0].to_num() {
            None => Datum::Null,
            Some(n @ (Num::Int(_) | Num::UInt(_))) => n.into_datum(),
            Some(Num::Dec(d, _)) => {
                let r = if f == Func::Floor {
                    d.floor()
                } else {
                    d.ceil()
                };
                match r.to_i64() {
                    Some(i) => Datum::Int(i),
                    None => Datum::Dec(r, 0),
                }
            }
            Some(Num::Float(x)) => Datum::Float(if f == Func::Floor {
                x.floor()
            } else {
                x.ceil()
            }),
        },
        Func::Sign => match args[0].to_num() {
            None => Datum::Null,
            Some(n) => Datum::Int(match n {
                Num::Float(x) => {
                    if x > 0.0 {
                        1
                    } else if x < 0.0 {
                        -1
                    } else {
                        0
                    }
                }
                other => other.exact().map_or(0, |d| {
                    if d.is_zero() {
                        0
                    } else if d.is_sign_negative() {
                        -1
                    } else {
                        1
                    }
                }),
            }),
        },
        Func::Mod => match (args[0].to_num(), args[1].to_num()) {
            (Some(a), Some(b)) => arith(ArithOp::Mod, a, b),
            _ => Datum::Null,
        },
        Func::Concat => {
            let mut out = String::new();
            for a in &args {
                match a.to_text() {
                    Some(t) => out.push_str(&t),
                    None => return Datum::Null,
                }
            }
            Datum::Str(out)
        }
        Func::Lower | Func::Upper => match args[0].to_text() {
            None => Datum::Null,
            Some(t) => Datum::Str(if f == Func::Lower {
                t.to_lowercase()
            } else {
                t.to_uppercase()
            }),
        },
        Func::Date => args[0].to_date().map_or(Datum::Null, Datum::Date),
        Func::Time => args
            .swap_remove(0)
            .to_time()
            .map_or(Datum::Null, Datum::Time),
        Func::Year => date_part(&args[0], |d| i64::from(d.year())),
        Func::Month => date_part(&args[0], |d| i64::from(d.month())),
        Func::Day => date_part(&args[0], |d| i64::from(d.day())),
        Func::Weekday => date_part(&args[0], |d| i64::from(d.weekday().num_days_from_monday())),
        Func::DayOfWeek => date_part(&args[0], |d| {
            i64::from(d.weekday().num_days_from_sunday()) + 1
        }),
        Func::DayOfYear => date_part(&args[0], |d| i64::from(d.ordinal())),
        Func::Quarter => date_part(&args[0], |d| i64::from((d.month() - 1) / 3 + 1)),
        Func::Hour => args[0]
            .to_time()
            .map_or(Datum::Null, |t| Datum::Int(i64::from(t.hour()))),
        Func::Minute => args[0]
            .to_time()
            .map_or(Datum::Null, |t| Datum::Int(i64::from(t.minute()))),
        Func::Second => args[0]
            .to_time()
            .map_or(Datum::Null, |t| Datum::Int(i64::from(t.second()))),
        Func::DateAdd(unit) | Func::DateSub(unit) => {
            let n = whole(&args[1]);
            let n = if matches!(f, Func::DateSub(_)) {
                n.and_then(i64::checked_neg)
            } else {
                n
            };
            n.map_or(Datum::Null, |n| date_add(&args[0], unit, n))
        }
        Func::DateFormat => {
            let dt = match &args[0] {
                Datum::Time(_) => None,
                other => other.to_datetime(),
            };
            match (dt, args[1].to_text()) {
                (Some(dt), Some(fmt)) => Datum::Str(date_format(&dt, &fmt)),
                _ => Datum::Null,
            }
        }
        Func::Week | Func::YearWeek => {
            // A NULL mode reads as 0, as in MySQL.
            let mode = args
                .get(1)
                .and_then(Datum::to_num)
                .and_then(|n| n.exact())
                .and_then(|d| d.trunc().to_i64())
                .unwrap_or(0);
            let Some(d) = date_of(&args[0]) else {
                return Datum::Null;
            };
            let mode = week_mode(mode);
            if f == Func::Week {
                Datum::Int(calc_week(d, mode).0)
            } else {
                let (week, year) = calc_week(d, mode | WEEK_YEAR);
                Datum::Int(year * 100 + week)
            }
        }
        Func::DayName => date_of(&args[0]).map_or(Datum::Null, |d| {
            Datum::Str(DAYS[d.weekday().num_days_from_monday() as usize].to_string())
        }),
        Func::MonthName => date_of(&args[0]).map_or(Datum::Null, |d| {
            Datum::Str(MONTHS[d.month0() as usize].to_string())
        }),
        Func::LastDay => date_of(&args[0])
            .and_then(|d| {
                let first = d.with_day(1)?;
                first.checked_add_months(chrono::Months::new(1))?.pred_opt()
            })
            .map_or(Datum::Null, Datum::Date),
        Func::ToDays => date_of(&args[0]).map_or(Datum::Null, |d| Datum::Int(day_number(d))),
        Func::DateDiff => match (date_of(&args[0]), date_of(&args[1])) {
            (Some(a), Some(b)) => Datum::Int(day_number(a) - day_number(b)),
            _ => Datum::Null,
        },
        Func::Substring
        | Func::Left
        | Func::Right
        | Func::CharLength
        | Func::Length
        | Func::Trim(_)
        | Func::Replace
        | Func::ConcatWs => string_call(f, &args),
        Func::ConvertTz { from, to } => match &args[0] {
            Datum::Time(_) => Datum::Null,
            v => v
                .to_datetime()
                .map_or(Datum::Null, |dt| Datum::DateTime(convert_tz(dt, from, to))),
        },
        Func::TimestampDiff(unit) => {
            let at = |v: &Datum| match v {
                Datum::Time(_) => None,
                other => other.to_datetime(),
            };
            match (at(&args[0]), at(&args[1])) {
                (Some(a), Some(b)) => Datum::Int(timestamp_diff(unit, a, b)),
                _ => Datum::Null,
            }
        }
    }
}

fn string_call(f: Func, args: &[Datum]) -> Datum {
    let text = |i: usize| args.get(i).and_then(Datum::to_text);
    let Some(s) = text(0) else {
        return Datum::Null;
    };
    let chars = || s.chars().count() as i64;
    let take = |from: i64, len: i64| -> String {
        s.chars()
            .skip(from.max(0) as usize)
            .take(len.max(0) as usize)
            .collect()
    };
    match f {
        Func::Substring => {
            let Some(pos) = args.get(1).and_then(whole) else {
                return Datum::Null;
            };
            let len = match args.get(2) {
                None => i64::MAX,
                Some(l) => match whole(l) {
                    Some(l) => l,
                    None => return Datum::Null,
                },
            };
            let n = chars();
            // 1-based; negative counts from the end; 0 or beyond gives ''.
            let start = match pos {
                0 => return Datum::Str(String::new()),
                p if p > 0 => p - 1,
                p => n + p,
            };
            if start < 0 || start >= n || len <= 0 {
                return Datum::Str(String::new());
            }
            Datum::Str(take(start, len))
        }
        Func::Left => match args.get(1).and_then(whole) {
            None => Datum::Null,
            Some(n) => Datum::Str(take(0, n)),
        },
        Func::Right => match args.get(1).and_then(whole) {
            None => Datum::Null,
            Some(n) => {
                let total = chars();
                let n = n.clamp(0, total);
                Datum::Str(take(total - n, n))
            }
        },
        Func::CharLength => Datum::Int(chars()),
        Func::Length => Datum::Int(s.len() as i64),
        Func::Trim(side) => {
            let rem = match args.get(1) {
                None => " ".to_string(),
                Some(r) => match r.to_text() {
                    Some(r) => r,
                    None => return Datum::Null,
                },
            };
            let mut out = s.as_str();
            if !rem.is_empty() {
                if side != TrimSide::Trailing {
                    while let Some(rest) = out.strip_prefix(rem.as_str()) {
                        out = rest;
                    }
                }
                if side != TrimSide::Leading {
                    while let Some(rest) = out.strip_suffix(rem.as_str()) {
                        out = rest;
                    }
                }
            }
            Datum::Str(out.to_string())
        }
        Func::Replace => match (text(1), text(2)) {
            (Some(from), Some(to)) => Datum::Str(if from.is_empty() {
                s
            } else {
                s.replace(&from, &to)
            }),
            _ => Datum::Null,
        },
        // CONCAT_WS: `s` is the separator; NULL arguments are skipped.
        Func::ConcatWs => {
            let parts: Vec<String> = args.iter().skip(1).filter_map(Datum::to_text).collect();
            Datum::Str(parts.join(&s))
        }
        _ => Datum::Null,
    }
}

/// A UTC offset as `CONVERT_TZ` accepts it (`+08:00`, `-3:30`), in
/// seconds: from -12:59 to +13:00, as MySQL.
pub(crate) fn parse_utc_offset(text: &str) -> Option<i32> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    let digits = |x: &str, max_len: usize| {
        (!x.is_empty() && x.len() <= max_len && x.bytes().all(|b| b.is_ascii_digit()))
            .then(|| x.parse::<i32>().ok())
            .flatten()
    };
    let (h, m) = (digits(h, 3)?, digits(m, 2)?);
    let secs = sign * (h * 3_600 + m * 60);
    (m <= 59 && (-(12 * 3_600 + 59 * 60)..=13 * 3_600).contains(&secs)).then_some(secs)
}

/// `CONVERT_TZ` between fixed offsets: a time whose UTC instant is outside
/// the TIMESTAMP range (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC) is
/// returned unchanged, as MySQL does.
fn convert_tz(dt: NaiveDateTime, from: i32, to: i32) -> NaiveDateTime {
    let Some(utc) = dt.checked_sub_signed(chrono::TimeDelta::seconds(i64::from(from))) else {
        return dt;
    };
    if !(1..=i64::from(i32::MAX)).contains(&utc.and_utc().timestamp()) {
        return dt;
    }
    utc.checked_add_signed(chrono::TimeDelta::seconds(i64::from(to)))
        .unwrap_or(dt)
}

/// The date of a DATE/DATETIME/string value; TIME has none (MySQL would
/// take today's date).
fn date_of(v: &Datum) -> Option<chrono::NaiveDate> {
    match v {
        Datum::Time(_) => None,
        other => other.to_date(),
    }
}

/// MySQL's day number (`TO_DAYS`): days since the year 0 of its calendar.
fn day_number(d: chrono::NaiveDate) -> i64 {
    calc_daynr(
        i64::from(d.year()),
        i64::from(d.month()),
        i64::from(d.day()),
    )
}

/// `calc_daynr` of MySQL (`sql-common/my_time.c`).
fn calc_daynr(year: i64, month: i64, day: i64) -> i64 {
    if year == 0 && month == 0 {
        return 0;
    }
    let mut y = year;
    let mut delsum = 365 * y + 31 * (month - 1) + day;
    if month <= 2 {
        y -= 1;
    } else {
        delsum -= (month * 4 + 23) / 10;
    }
    let temp = ((y / 100 + 1) * 3) / 4;
    delsum + y / 4 - temp
}

fn days_in_year(year: i64) -> i64 {
    if year & 3 == 0 && (year % 100 != 0 || (year % 400 == 0 && year != 0)) {
        366
    } else {
        365
    }
}

const WEEK_MONDAY_FIRST: i64 = 1;
const WEEK_YEAR: i64 = 2;
const WEEK_FIRST_WEEKDAY: i64 = 4;

/// The week behaviour of `WEEK()`'s mode argument (MySQL's `week_mode`).
fn week_mode(mode: i64) -> i64 {
    let mut f = mode & 7;
    if f & WEEK_MONDAY_FIRST == 0 {
        f ^= WEEK_FIRST_WEEKDAY;
    }
    f
}

/// MySQL's `calc_week`: (week, year the week belongs to).
fn calc_week(d: chrono::NaiveDate, behaviour: i64) -> (i64, i64) {
    let (year, month, day) = (
        i64::from(d.year()),
        i64::from(d.month()),
        i64::from(d.day()),
    );
    let daynr = calc_daynr(year, month, day);
    let mut first_daynr = calc_daynr(year, 1, 1);
    let monday_first = behaviour & WEEK_MONDAY_FIRST != 0;
    let mut week_year = behaviour & WEEK_YEAR != 0;
    let first_weekday = behaviour & WEEK_FIRST_WEEKDAY != 0;
    let calc_weekday = |daynr: i64, sunday_first: bool| (daynr + 5 + i64::from(sunday_first)) % 7;
    let mut weekday = calc_weekday(first_daynr, !monday_first);
    let mut out_year = year;
    if month == 1 && day <= 7 - weekday {
        if !week_year && ((first_weekday && weekday != 0) || (!first_weekday && weekday >= 4)) {
            return (0, out_year);
        }
        week_year = true;
        out_year -= 1;
        let days = days_in_year(out_year);
        first_daynr -= days;
        weekday = (weekday + 53 * 7 - days) % 7;
    }
    let days = if (first_weekday && weekday != 0) || (!first_weekday && weekday >= 4) {
        daynr - (first_daynr + (7 - weekday))
    } else {
        daynr - (first_daynr - weekday)
    };
    if week_year && days >= 52 * 7 {
        let weekday = (weekday + days_in_year(out_year)) % 7;
        if (!first_weekday && weekday < 4) || (first_weekday && weekday == 0) {
            return (1, out_year + 1);
        }
    }
    (days / 7 + 1, out_year)
}

/// `TIMESTAMPDIFF(unit, a, b)` as MySQL computes it: whole units from `a`
/// to `b`, truncated toward zero; months count calendar months, less one
/// when `b`'s day and time of month are before `a`'s.
fn timestamp_diff(unit: IntervalUnit, a: NaiveDateTime, b: NaiveDateTime) -> i64 {
    let neg = if b < a { -1 } else { 1 };
    let (beg, end) = if b < a { (b, a) } else { (a, b) };
    // Whole seconds between them (microseconds truncated).
    let span = end - beg;
    let seconds = span.num_seconds();
    let months = || {
        let (yb, ye) = (i64::from(beg.year()), i64::from(end.year()));
        let (mb, me) = (i64::from(beg.month()), i64::from(end.month()));
        let (db, de) = (beg.day(), end.day());
        let earlier_in_year = me < mb || (me == mb && de < db);
        let mut years = ye - yb;
        if earlier_in_year {
            years -= 1;
        }
        let mut months = 12 * years;
        if earlier_in_year {
            months += 12 - (mb - me);
        } else {
            months += me - mb;
        }
        let (tb, te) = (beg.time(), end.time());
        if de < db || (de == db && te < tb) {
            months -= 1;
        }
        months
    };
    neg * match unit {
        IntervalUnit::Year => months() / 12,
        IntervalUnit::Quarter => months() / 3,
        IntervalUnit::Month => months(),
        IntervalUnit::Week => seconds / 86_400 / 7,
        IntervalUnit::Day => seconds / 86_400,
        IntervalUnit::Hour => seconds / 3_600,
        IntervalUnit::Minute => seconds / 60,
        IntervalUnit::Second => seconds,
    }
}

/// The whole number an interval count, position or length reads as (MySQL
/// rounds a fractional one half away from zero); `None` for NULL.
fn whole(v: &Datum) -> Option<i64> {
    match v.to_num()? {
        Num::Int(i) => Some(i),
        Num::UInt(u) => i64::try_from(u).ok(),
        Num::Dec(d, _) => d
            .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
            .to_i64(),
        Num::Float(x) if x.is_finite() && x.abs() < 9.2e18 => Some(x.round() as i64),
        Num::Float(_) => None,
    }
}

/// `v` plus `n` units: a DATE stays a DATE for units of days and longer;
/// results outside years 0–9999 are NULL, as in MySQL. Months clamp to the
/// month's last day (`2026-01-31` plus one month is `2026-02-28`).
fn date_add(v: &Datum, unit: IntervalUnit, n: i64) -> Datum {
    if matches!(v, Datum::Time(_)) {
        return Datum::Null;
    }
    let Some(dt) = v.to_datetime() else {
        return Datum::Null;
    };
    let months = |m: i64| -> Option<NaiveDateTime> {
        let count = chrono::Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            dt.checked_add_months(count)
        } else {
            dt.checked_sub_months(count)
        }
    };
    let delta = |secs_per_unit: i64| {
        n.checked_mul(secs_per_unit)
            .and_then(chrono::TimeDelta::try_seconds)
            .and_then(|d| dt.checked_add_signed(d))
    };
    let out = match unit {
        IntervalUnit::Second => delta(1),
        IntervalUnit::Minute => delta(60),
        IntervalUnit::Hour => delta(3_600),
        IntervalUnit::Day => delta(86_400),
        IntervalUnit::Week => delta(7 * 86_400),
        IntervalUnit::Month => months(n),
        IntervalUnit::Quarter => n.checked_mul(3).and_then(months),
        IntervalUnit::Year => n.checked_mul(12).and_then(months),
    };
    match out {
        Some(r) if (0..=9999).contains(&r.year()) => {
            if matches!(v, Datum::Date(_)) && unit.keeps_date() {
                Datum::Date(r.date())
            } else {
                Datum::DateTime(r)
            }
        }
        _ => Datum::Null,
    }
}

fn date_part(v: &Datum, f: impl Fn(&chrono::NaiveDate) -> i64) -> Datum {
    match v {
        Datum::Time(_) => Datum::Null,
        other => other.to_date().map_or(Datum::Null, |d| Datum::Int(f(&d))),
    }
}

/// ROUND / TRUNCATE to `d` digits (negative: left of the point). Exact
/// values round half away from zero; doubles round half to even, as MySQL
/// does with `rint`.
fn round(n: Num, d: i32, truncate: bool) -> Datum {
    let strategy = if truncate {
        RoundingStrategy::ToZero
    } else {
        RoundingStrategy::MidpointAwayFromZero
    };
    match n {
        Num::Float(x) => {
            let p = 10f64.powi(d);
            let scaled = x * p;
            let r = if truncate {
                scaled.trunc()
            } else {
                scaled.round_ties_even()
            };
            Datum::Float(r / p)
        }
        Num::Int(_) | Num::UInt(_) if d >= 0 => n.into_datum(),
        Num::Int(_) | Num::UInt(_) => {
            let v = n.exact().unwrap_or_default();
            let r = round_decimal(v, d, strategy);
            r.to_i64().map_or(Datum::Dec(r, 0), Datum::Int)
        }
        Num::Dec(v, _) => {
            let r = round_decimal(v, d, strategy);
            Datum::Dec(r, d.clamp(0, MAX_SCALE as i32) as u32)
        }
    }
}

fn round_decimal(v: Decimal, d: i32, strategy: RoundingStrategy) -> Decimal {
    if d >= 0 {
        return v.round_dp_with_strategy(d as u32, strategy);
    }
    let p = Decimal::from_i128_with_scale(10i128.pow(d.unsigned_abs().min(28)), 0);
    match v.checked_div(p) {
        Some(q) => q
            .round_dp_with_strategy(0, strategy)
            .checked_mul(p)
            .unwrap_or(v),
        None => v,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Specifiers `DATE_FORMAT` understands.
pub(crate) const DATE_FORMAT_SPECIFIERS: &str = "abcDdefHhIijklMmprSsTUvWwxYy%";

/// MySQL's `DATE_FORMAT`.
pub(crate) fn date_format(dt: &NaiveDateTime, fmt: &str) -> String {
    let mut out = String::with_capacity(fmt.len() + 8);
    let mut it = fmt.chars();
    let d = dt.date();
    let hour12 = |h: u32| if h.is_multiple_of(12) { 12 } else { h % 12 };
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let Some(s) = it.next() else {
            break;
        };
        let month = MONTHS[d.month0() as usize];
        let day = DAYS[d.weekday().num_days_from_monday() as usize];
        let _ = match s {
            'a' => write!(out, "{}", &day[..3]),
            'b' => write!(out, "{}", &month[..3]),
            'c' => write!(out, "{}", d.month()),
            'D' => {
                let n = d.day();
                let suffix = match (n % 10, n % 100) {
                    (_, 11..=13) => "th",
                    (1, _) => "st",
                    (2, _) => "nd",
                    (3, _) => "rd",
                    _ => "th",
                };
                write!(out, "{n}{suffix}")
            }
            'd' => write!(out, "{:02}", d.day()),
            'e' => write!(out, "{}", d.day()),
            'f' => write!(out, "{:06}", dt.nanosecond() / 1000 % 1_000_000),
            'H' => write!(out, "{:02}", dt.hour()),
            'h' | 'I' => write!(out, "{:02}", hour12(dt.hour())),
            'i' => write!(out, "{:02}", dt.minute()),
            'j' => write!(out, "{:03}", d.ordinal()),
            'k' => write!(out, "{}", dt.hour()),
            'l' => write!(out, "{}", hour12(dt.hour())),
            'M' => write!(out, "{month}"),
            'm' => write!(out, "{:02}", d.month()),
            'p' => write!(out, "{}", if dt.hour() < 12 { "AM" } else { "PM" }),
            'r' => write!(
                out,
                "{:02}:{:02}:{:02} {}",
                hour12(dt.hour()),
                dt.minute(),
                dt.second(),
                if dt.hour() < 12 { "AM" } else { "PM" }
            ),
            'S' | 's' => write!(out, "{:02}", dt.second()),
            'T' => write!(
                out,
                "{:02}:{:02}:{:02}",
                dt.hour(),
                dt.minute(),
                dt.second()
            ),
            'U' => {
                let yday = d.ordinal0() as i64;
                let wday = i64::from(d.weekday().num_days_from_sunday());
                write!(out, "{:02}", (yday + 7 - wday) / 7)
            }
            'v' => write!(out, "{:02}", d.iso_week().week()),
            'x' => write!(out, "{:04}", d.iso_week().year()),
            'W' => write!(out, "{day}"),
            'w' => write!(out, "{}", d.weekday().num_days_from_sunday()),
            'Y' => write!(out, "{:04}", d.year()),
            'y' => write!(out, "{:02}", d.year().rem_euclid(100)),
            other => {
                out.push(other);
                Ok(())
            }
        };
    }
    out
}

/// Whether a literal format only uses supported specifiers; returns the
/// first unsupported one.
pub(crate) fn unsupported_specifier(fmt: &str) -> Option<char> {
    let mut it = fmt.chars();
    while let Some(c) = it.next() {
        if c == '%' {
            match it.next() {
                Some(s) if !DATE_FORMAT_SPECIFIERS.contains(s) => return Some(s),
                _ => {}
            }
        }
    }
    None
}

/// The common type of IF/IFNULL branches, for tests.
#[cfg(test)]
fn common_of(a: &Datum, b: &Datum) -> crate::datum::Common {
    common_type([a, b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;
    use mdp_types::Value;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    fn dt(s: &str) -> Datum {
        Datum::DateTime(NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").unwrap_or_default())
    }

    /// The result as MySQL shows it (decimals with their display scale).
    fn v(f: Func, args: Vec<Datum>) -> String {
        call(f, args).to_text().unwrap_or_else(|| "NULL".into())
    }

    #[test]
    fn date_add_and_sub_follow_mysql() {
        let dt = |s: &str| {
            Datum::DateTime(
                NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S").expect("datetime"),
            )
        };
        let date = |s: &str| Datum::Date(NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date"));
        let add = |u, x: Datum, n: i64| v(Func::DateAdd(u), vec![x, Datum::Int(n)]);
        let sub = |u, x: Datum, n: i64| v(Func::DateSub(u), vec![x, Datum::Int(n)]);
        // Across midnight and the year's end.
        assert_eq!(
            add(IntervalUnit::Hour, dt("2026-12-31 20:30:00"), 8),
            "2027-01-01 04:30:00"
        );
        assert_eq!(
            sub(IntervalUnit::Minute, dt("2026-03-01 00:10:00"), 20),
            "2026-02-28 23:50:00"
        );
        // A DATE stays a DATE for days and longer, becomes a DATETIME for shorter units.
        assert_eq!(add(IntervalUnit::Day, date("2026-02-28"), 1), "2026-03-01");
        assert_eq!(
            add(IntervalUnit::Hour, date("2026-02-28"), 1),
            "2026-02-28 01:00:00"
        );
        // Months clamp to the month's last day.
        assert_eq!(
            add(IntervalUnit::Month, date("2026-01-31"), 1),
            "2026-02-28"
        );
        assert_eq!(sub(IntervalUnit::Year, date("2028-02-29"), 1), "2027-02-28");
        assert_eq!(
            add(IntervalUnit::Quarter, date("2026-11-30"), 1),
            "2027-02-28"
        );
        assert_eq!(
            sub(IntervalUnit::Week, date("2026-11-22"), -2),
            "2026-12-06"
        );
        // Text is read as a datetime; a fractional count rounds half away from zero.
        assert_eq!(
            v(
                Func::DateAdd(IntervalUnit::Second),
                vec![
                    Datum::Str("2026-11-22 10:00:00".into()),
                    Datum::Dec(dec("1.5"), 1)
                ]
            ),
            "2026-11-22 10:00:02"
        );
        // NULL in, NULL out; out of range is NULL.
        assert_eq!(add(IntervalUnit::Day, Datum::Null, 1), "NULL");
        assert_eq!(
            v(
                Func::DateAdd(IntervalUnit::Day),
                vec![date("2026-11-22"), Datum::Null]
            ),
            "NULL"
        );
        assert_eq!(add(IntervalUnit::Year, date("9999-06-01"), 1), "NULL");
        assert_eq!(
            add(IntervalUnit::Second, dt("2026-11-22 00:00:00"), i64::MAX),
            "NULL"
        );
    }

    #[test]
    fn null_handling_functions() {
        assert_eq!(v(Func::IfNull, vec![Datum::Null, Datum::Int(3)]), "3");
        assert_eq!(
            v(
                Func::Coalesce,
                vec![Datum::Null, Datum::Null, Datum::Dec(dec("1.50"), 2)]
            ),
            "1.50"
        );
        assert_eq!(v(Func::NullIf, vec![Datum::Int(3), Datum::Int(3)]), "NULL");
        assert_eq!(v(Func::NullIf, vec![Datum::Int(3), Datum::Int(4)]), "3");
        assert_eq!(
            v(
                Func::If,
                vec![Datum::Int(1), Datum::Int(2), Datum::Dec(dec("0.5"), 1)]
            ),
            "2.0"
        );
        assert_eq!(
            v(Func::If, vec![Datum::Null, Datum::Int(2), Datum::Int(0)]),
            "0"
        );
        assert_eq!(
            v(
                Func::Greatest,
                vec![Datum::Int(1), Datum::Int(7), Datum::Int(3)]
            ),
            "7"
        );
        assert_eq!(v(Func::Least, vec![Datum::Int(1), Datum::Null]), "NULL");
        let mixed = vec![Datum::Int(1), Datum::Str("10".into()), Datum::Int(9)];
        assert_eq!(v(Func::Greatest, mixed), "10");
        let words = vec![Datum::Str("b".into()), Datum::Str("A".into())];
        assert_eq!(v(Func::Least, words), "A");
        assert_eq!(
            common_of(&Datum::Int(1), &Datum::Float(0.5)),
            crate::datum::Common::Float
        );
    }

    #[test]
    fn numeric_functions() {
        assert_eq!(v(Func::Round, vec![Datum::Dec(dec("2.5"), 1)]), "3");
        assert_eq!(v(Func::Round, vec![Datum::Dec(dec("-2.5"), 1)]), "-3");
        assert_eq!(
            v(
                Func::Round,
                vec![Datum::Dec(dec("12.345"), 3), Datum::Int(2)]
            ),
            "12.35"
        );
        assert_eq!(
            v(Func::Round, vec![Datum::Int(1250), Datum::Int(-2)]),
            "1300"
        );
        assert_eq!(v(Func::Round, vec![Datum::Float(2.5)]), "2");
        assert_eq!(
            v(
                Func::Truncate,
                vec![Datum::Dec(dec("12.349"), 3), Datum::Int(2)]
            ),
            "12.34"
        );
        // Rounding sees the internal precision of a division (0.004999999…).
        let q = Datum::Dec(dec("0.004999999"), 4);
        assert_eq!(v(Func::Round, vec![q, Datum::Int(2)]), "0.00");
        assert_eq!(v(Func::Floor, vec![Datum::Dec(dec("-1.5"), 1)]), "-2");
        assert_eq!(v(Func::Ceil, vec![Datum::Dec(dec("1.2"), 1)]), "2");
        assert_eq!(v(Func::Abs, vec![Datum::Int(-4)]), "4");
        assert_eq!(v(Func::Sign, vec![Datum::Dec(dec("-0.1"), 1)]), "-1");
        assert_eq!(v(Func::Mod, vec![Datum::Int(10), Datum::Int(4)]), "2");
    }

    #[test]
    fn string_functions() {
        assert_eq!(
            v(
                Func::Concat,
                vec![
                    Datum::Str("a".into()),
                    Datum::Int(1),
                    Datum::Dec(dec("2.50"), 2)
                ]
            ),
            "a12.50"
        );
        assert_eq!(
            v(Func::Concat, vec![Datum::Str("a".into()), Datum::Null]),
            "NULL"
        );
        assert_eq!(v(Func::Upper, vec![Datum::Str("Paid".into())]), "PAID");
        assert_eq!(v(Func::Lower, vec![Datum::Str("Paid".into())]), "paid");
        let s = |x: &str| Datum::Str(x.into());
        let i = Datum::Int;
        // Characters, not bytes.
        assert_eq!(v(Func::Substring, vec![s("Zürich"), i(2), i(3)]), "üri");
        assert_eq!(v(Func::Substring, vec![s("Zürich"), i(-4)]), "rich");
        assert_eq!(v(Func::Substring, vec![s("Zürich"), i(0)]), "");
        assert_eq!(v(Func::Substring, vec![s("Zürich"), i(-7)]), "");
        assert_eq!(v(Func::Substring, vec![s("Zürich"), i(2), i(-1)]), "");
        assert_eq!(v(Func::Substring, vec![s("Zürich"), Datum::Null]), "NULL");
        assert_eq!(v(Func::Left, vec![s("Zürich"), i(2)]), "Zü");
        assert_eq!(v(Func::Left, vec![s("Zürich"), i(-2)]), "");
        assert_eq!(v(Func::Right, vec![s("Zürich"), i(9)]), "Zürich");
        assert_eq!(v(Func::CharLength, vec![s("Zürich")]), "6");
        assert_eq!(v(Func::Length, vec![s("Zürich")]), "7");
        assert_eq!(v(Func::Trim(TrimSide::Both), vec![s("  a b  ")]), "a b");
        assert_eq!(v(Func::Trim(TrimSide::Both), vec![s("xxaxx"), s("x")]), "a");
        assert_eq!(
            v(Func::Trim(TrimSide::Leading), vec![s("xyxyaxy"), s("xy")]),
            "axy"
        );
        assert_eq!(v(Func::Trim(TrimSide::Trailing), vec![s(" a ")]), " a");
        assert_eq!(v(Func::Replace, vec![s("aAa"), s("a"), s("b")]), "bAb");
        assert_eq!(v(Func::Replace, vec![s("aAa"), s(""), s("b")]), "aAa");
        assert_eq!(
            v(Func::ConcatWs, vec![s("-"), s("a"), Datum::Null, i(3)]),
            "a-3"
        );
        assert_eq!(v(Func::ConcatWs, vec![Datum::Null, s("a")]), "NULL");
    }

    #[test]
    fn date_functions() {
        let t = dt("2026-11-21 09:05:03");
        assert_eq!(v(Func::Date, vec![t.clone()]), "2026-11-21");
        assert_eq!(
            v(Func::Date, vec![Datum::Str("2026-11-21 23:00:00".into())]),
            "2026-11-21"
        );
        assert_eq!(v(Func::Date, vec![Datum::Str("garbage".into())]), "NULL");
        assert_eq!(v(Func::Time, vec![t.clone()]), "09:05:03");
        assert_eq!(v(Func::Year, vec![t.clone()]), "2026");
        assert_eq!(v(Func::Month, vec![t.clone()]), "11");
        assert_eq!(v(Func::Day, vec![t.clone()]), "21");
        assert_eq!(v(Func::Hour, vec![t.clone()]), "9");
        assert_eq!(v(Func::Minute, vec![t.clone()]), "5");
        assert_eq!(v(Func::Second, vec![t.clone()]), "3");
        // 2026-11-21 is a Saturday.
        assert_eq!(v(Func::Weekday, vec![t.clone()]), "5");
        assert_eq!(v(Func::DayOfWeek, vec![t.clone()]), "7");
        assert_eq!(v(Func::DayOfYear, vec![t.clone()]), "325");
        assert_eq!(v(Func::Quarter, vec![t.clone()]), "4");
        assert_eq!(v(Func::Hour, vec![Datum::Str("10:30:00".into())]), "10");
        let d = Datum::Date(NaiveDate::from_ymd_opt(2026, 1, 3).unwrap_or_default());
        assert_eq!(v(Func::Hour, vec![d]), "0");
    }

    #[test]
    fn convert_tz_between_offsets_follows_mysql() {
        let tz = |x: Datum, from: &str, to: &str| {
            let (Some(from), Some(to)) = (parse_utc_offset(from), parse_utc_offset(to)) else {
                return "bad offset".to_string();
            };
            v(Func::ConvertTz { from, to }, vec![x])
        };
        // (time, from, to, result) as MariaDB 10.11 answers; outside
        // TIMESTAMP's range in UTC a time is returned unchanged.
        let cases = [
            (
                "2026-11-21 20:00:00",
                "+00:00",
                "+08:00",
                "2026-11-22 04:00:00",
            ),
            (
                "2026-11-21 20:00:00",
                "+8:00",
                "+00:00",
                "2026-11-21 12:00:00",
            ),
            (
                "2026-11-21 20:00:00",
                "-12:59",
                "+00:00",
                "2026-11-22 08:59:00",
            ),
            (
                "2026-11-21 20:00:00",
                "-0:30",
                "+00:00",
                "2026-11-21 20:30:00",
            ),
            (
                "2026-11-21 20:00:00",
                "+13:00",
                "+00:00",
                "2026-11-21 07:00:00",
            ),
            ("2026-11-21", "+00:00", "+08:00", "2026-11-21 08:00:00"),
            (
                "1970-01-01 00:00:00",
                "+00:00",
                "+08:00",
                "1970-01-01 00:00:00",
            ),
            (
                "1970-01-01 00:00:01",
                "+00:00",
                "+08:00",
                "1970-01-01 08:00:01",
            ),
            (
                "1970-01-01 07:59:59",
                "+08:00",
                "+00:00",
                "1970-01-01 07:59:59",
            ),
            (
                "2038-01-19 03:14:07",
                "+00:00",
                "+08:00",
                "2038-01-19 11:14:07",
            ),
            (
                "2038-01-19 03:14:08",
                "+00:00",
                "+08:00",
                "2038-01-19 03:14:08",
            ),
        ];
        for (at, from, to, want) in cases {
            let got = tz(Datum::Str(at.into()), from, to);
            assert_eq!(got, want, "CONVERT_TZ({at}, {from}, {to})");
        }
        assert_eq!(tz(Datum::Null, "+00:00", "+08:00"), "NULL");
        assert_eq!(tz(Datum::Str("garbage".into()), "+00:00", "+08:00"), "NULL");
        for bad in [
            "+14:00", "+13:01", "-13:00", "+00:60", "8:00", " +08:00", "UTC", "SYSTEM", "+:30",
        ] {
            assert_eq!(parse_utc_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn weeks_names_and_differences_follow_mysql() {
        // (day, WEEK modes 0–7, YEARWEEK, YEARWEEK mode 1, TO_DAYS,
        // LAST_DAY, DAYNAME, MONTHNAME) as MariaDB 10.11 answers them.
        let cases = [
            (
                "2024-12-29",
                [52, 52, 52, 52, 53, 52, 1, 52],
                202452,
                202452,
                739614,
                "2024-12-31",
                "Sunday",
                "December",
            ),
            (
                "2024-12-31",
                [52, 53, 52, 1, 53, 53, 1, 53],
                202452,
                202501,
                739616,
                "2024-12-31",
                "Tuesday",
                "December",
            ),
            (
                "2025-01-01",
                [0, 1, 52, 1, 1, 0, 1, 53],
                202452,
                202501,
                739617,
                "2025-01-31",
                "Wednesday",
                "January",
            ),
            (
                "2027-01-03",
                [1, 0, 1, 53, 1, 0, 1, 52],
                202701,
                202653,
                740349,
                "2027-01-31",
                "Sunday",
                "January",
            ),
            (
                "2028-12-31",
                [53, 52, 53, 52, 53, 52, 1, 52],
                202853,
                202852,
                741077,
                "2028-12-31",
                "Sunday",
                "December",
            ),
            (
                "2024-02-10",
                [5, 6, 5, 6, 6, 6, 6, 6],
                202405,
                202406,
                739291,
                "2024-02-29",
                "Saturday",
                "February",
            ),
        ];
        for (day, weeks, yw, yw1, to_days, last, dname, mname) in cases {
            let d = Datum::Str(day.into());
            for (mode, want) in weeks.iter().enumerate() {
                let got = v(Func::Week, vec![d.clone(), Datum::Int(mode as i64)]);
                assert_eq!(got, want.to_string(), "WEEK({day}, {mode})");
            }
            assert_eq!(v(Func::Week, vec![d.clone()]), weeks[0].to_string());
            assert_eq!(v(Func::YearWeek, vec![d.clone()]), yw.to_string(), "{day}");
            assert_eq!(
                v(Func::YearWeek, vec![d.clone(), Datum::Int(1)]),
                yw1.to_string()
            );
            assert_eq!(v(Func::ToDays, vec![d.clone()]), to_days.to_string());
            assert_eq!(v(Func::LastDay, vec![d.clone()]), last);
            assert_eq!(v(Func::DayName, vec![d.clone()]), dname);
            assert_eq!(v(Func::MonthName, vec![d]), mname);
        }
        assert_eq!(v(Func::Week, vec![Datum::Null]), "NULL");
        assert_eq!(v(Func::LastDay, vec![Datum::Str("garbage".into())]), "NULL");
        use IntervalUnit::*;
        // A month is counted only once the day and time of month are reached.
        let diffs = [
            (Month, "2026-01-31 10:00:00", "2026-02-28 09:59:59", "0"),
            (Month, "2026-01-31 10:00:00", "2026-03-31 10:00:00", "2"),
            (Month, "2026-03-31 10:00:00", "2026-01-31 10:00:01", "-1"),
            (Year, "2024-02-29 00:00:00", "2025-02-28 00:00:00", "0"),
            (Day, "2026-01-02 00:00:01", "2026-01-01 00:00:00", "-1"),
            (Quarter, "2026-01-15 00:00:00", "2026-07-14 23:59:59", "1"),
        ];
        for (unit, a, b, want) in diffs {
            let got = v(Func::TimestampDiff(unit), vec![dt(a), dt(b)]);
            assert_eq!(got, want, "TIMESTAMPDIFF({unit:?}, {a}, {b})");
        }
        assert_eq!(
            v(
                Func::DateDiff,
                vec![dt("2026-03-01 23:59:59"), dt("2026-02-28 00:00:01")]
            ),
            "1"
        );
    }

    #[test]
    fn date_format_specifiers() {
        let t = dt("2026-03-01 15:04:05");
        let f = |fmt: &str| v(Func::DateFormat, vec![t.clone(), Datum::Str(fmt.into())]);
        assert_eq!(f("%Y-%m-%d %H:%i:%s"), "2026-03-01 15:04:05");
        assert_eq!(f("%y %c %e %k %l %p"), "26 3 1 15 3 PM");
        assert_eq!(f("%M %b %W %a %j %D"), "March Mar Sunday Sun 060 1st");
        assert_eq!(f("%f %% %T %r %h"), "000000 % 15:04:05 03:04:05 PM 03");
        assert_eq!(f("%U %w %v %x"), "09 0 09 2026");
        assert_eq!(f("%Q"), "Q");
        assert_eq!(unsupported_specifier("%Y-%u"), Some('u'));
        assert_eq!(unsupported_specifier("%Y-%m"), None);
        assert_eq!(
            call(Func::DateFormat, vec![Datum::Null, Datum::Str("%Y".into())]).to_value(),
            Value::Null
        );
    }
}
