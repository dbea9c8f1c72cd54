//! Byte strings that sort like the values of a multiset.
//!
//! MIN and MAX keep their value → count multisets in the state store one
//! entry per value, under [`sort_key`]: comparing two keys byte by byte gives
//! the order of [`crate::agg::OrdValue`] (MySQL's comparison of values of one
//! column, ties between equal values of different spellings, types or scales
//! broken so they stay distinct entries). The store then finds the extreme
//! of a group with one ordered lookup instead of reading the whole multiset.

use crate::datum::{collate_key, Datum, Num};
use chrono::{NaiveDateTime, Timelike};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

/// The value's key: equal keys ⇔ [`crate::agg::OrdValue`]s compare equal,
/// and keys order as the values do. NULL has a key but is never stored.
pub(crate) fn sort_key(d: &Datum) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    match d {
        Datum::Null => out.push(0),
        Datum::Int(_) | Datum::UInt(_) | Datum::Dec(..) | Datum::Float(_) => {
            out.push(1);
            if let Some(n) = d.to_num() {
                number(&mut out, n);
            }
            out.extend_from_slice(&rank(d).to_be_bytes());
        }
        Datum::Date(_) | Datum::DateTime(_) => {
            out.push(2);
            let dt = d.to_datetime().unwrap_or(NaiveDateTime::MIN);
            let t = dt.and_utc();
            out.extend_from_slice(&flip_i64(t.timestamp()));
            out.extend_from_slice(&t.timestamp_subsec_nanos().to_be_bytes());
            out.extend_from_slice(&rank(d).to_be_bytes());
        }
        Datum::Time(t) => {
            out.push(3);
            out.extend_from_slice(&t.num_seconds_from_midnight().to_be_bytes());
            out.extend_from_slice(&t.nanosecond().to_be_bytes());
        }
        Datum::Str(s) => {
            out.push(4);
            escaped(&mut out, collate_key(s).as_bytes());
            escaped(&mut out, s.as_bytes());
        }
        Datum::Bytes(b) => {
            out.push(5);
            out.extend_from_slice(b);
        }
    }
    out
}

/// Numbers compare as doubles when either side is a double, else exactly:
/// the double's order first, the exact value within one double (doubles
/// after every exact value they equal, as their tie-break rank is highest).
fn number(out: &mut Vec<u8>, n: Num) {
    // Correctly rounded, hence monotone in the exact value.
    let double = match n {
        Num::Dec(d, _) => d.to_string().parse().unwrap_or_else(|_| n.to_f64()),
        other => other.to_f64(),
    };
    out.extend_from_slice(&flip_f64(double));
    match n.exact() {
        Some(x) => {
            out.push(0);
            exact(out, x);
        }
        None => out.push(1),
    }
}

/// An exact decimal: sign, then integer and fractional part (scaled to 28
/// digits) as fixed-width big-endian magnitudes, inverted for negatives.
fn exact(out: &mut Vec<u8>, x: Decimal) {
    let negative = x.is_sign_negative() && !x.is_zero();
    let abs = x.abs();
    let int = abs.trunc();
    let frac = abs - int;
    let int = int.to_u128().unwrap_or(u128::MAX);
    let mut frac_scaled = frac.mantissa().unsigned_abs();
    for _ in frac.scale()..crate::datum::MAX_SCALE {
        frac_scaled *= 10;
    }
    out.push(if negative { 0 } else { 1 });
    for part in [int, frac_scaled] {
        let part = if negative { !part } else { part };
        out.extend_from_slice(&part.to_be_bytes());
    }
}

/// The tie-break rank of equal values (as `agg::type_rank`).
fn rank(d: &Datum) -> u32 {
    match d {
        Datum::Dec(_, s) => 1 + s,
        Datum::Float(_) => 100,
        Datum::DateTime(_) => 1,
        _ => 0,
    }
}

fn flip_i64(v: i64) -> [u8; 8] {
    ((v as u64) ^ (1 << 63)).to_be_bytes()
}

/// IEEE order as unsigned bytes; −0.0 and 0.0 (equal as numbers) share a key.
fn flip_f64(f: f64) -> [u8; 8] {
    let f = if f == 0.0 { 0.0 } else { f };
    let bits = f.to_bits();
    let key = if bits >> 63 == 1 {
        !bits
    } else {
        bits | (1 << 63)
    };
    key.to_be_bytes()
}

/// Bytes followed by more components: 0x00 is written 0x00 0xFF and the end
/// 0x00 0x01, so a prefix sorts before its extensions.
fn escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    for &b in bytes {
        out.push(b);
        if b == 0 {
            out.push(0xFF);
        }
    }
    out.extend_from_slice(&[0, 1]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::OrdValue;
    use chrono::{NaiveDate, NaiveTime};
    use proptest::prelude::*;
    use std::cmp::Ordering;

    fn arb_datum() -> impl Strategy<Value = Datum> {
        let dec = (any::<i64>(), 0u32..=6).prop_map(|(m, s)| {
            let d = Decimal::new(m % 1_000_000_000, s);
            Datum::Dec(d, s)
        });
        let date = (-20_000i32..20_000).prop_map(|n| {
            Datum::Date(NaiveDate::from_num_days_from_ce_opt(730_000 + n).unwrap_or_default())
        });
        let datetime = (-20_000i64..20_000, 0u32..86_400, prop::bool::ANY).prop_map(|(d, s, z)| {
            let day = NaiveDate::from_num_days_from_ce_opt(730_000 + d as i32).unwrap_or_default();
            let secs = if z { 0 } else { s };
            Datum::DateTime(day.and_time(
                NaiveTime::from_num_seconds_from_midnight_opt(secs, 0).unwrap_or_default(),
            ))
        });
        prop_oneof![
            (-1000i64..1000).prop_map(Datum::Int),
            any::<i64>().prop_map(Datum::Int),
            any::<u64>().prop_map(Datum::UInt),
            dec,
            (-1000i32..1000, prop::bool::ANY)
                .prop_map(|(i, half)| Datum::Float(f64::from(i) + if half { 0.5 } else { 0.0 })),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Datum::Float),
            "[a-cA-C \\x00é]{0,5}".prop_map(Datum::Str),
            prop::collection::vec(any::<u8>(), 0..4).prop_map(Datum::Bytes),
            date,
            datetime,
            (0u32..86_400).prop_map(|s| Datum::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(s, 0).unwrap_or_default()
            )),
        ]
    }

    /// A double beside a decimal compares through the decimal's double,
    /// which the engine approximates and the key rounds correctly: such a
    /// mixed column is left out of the exact comparison.
    fn double_beside_decimal(a: &Datum, b: &Datum) -> bool {
        matches!(
            (a, b),
            (Datum::Float(_), Datum::Dec(..)) | (Datum::Dec(..), Datum::Float(_))
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn keys_sort_like_values(a in arb_datum(), b in arb_datum()) {
            prop_assume!(!double_beside_decimal(&a, &b));
            let by_value = OrdValue(a.clone()).cmp(&OrdValue(b.clone()));
            let by_key = sort_key(&a).cmp(&sort_key(&b));
            prop_assert_eq!(by_value, by_key, "{:?} vs {:?}", a, b);
        }
    }

    #[test]
    fn ties_between_equal_values_follow_the_type_rank() {
        let d = |m: i64, sc: u32| Datum::Dec(Decimal::new(m, sc), sc);
        let pairs = [
            (d(250, 2), Datum::Float(2.5)),
            (d(25, 1), d(250, 2)),
            (Datum::Int(3), d(300, 2)),
            (Datum::Int(-3), d(-25, 1)),
            (d(-1, 28), Datum::Int(0)),
            (Datum::Int(0), d(1, 28)),
            (Datum::Str("aB".into()), Datum::Str("ab".into())),
            (Datum::Str("a".into()), Datum::Str("a\0".into())),
        ];
        for (a, b) in pairs {
            assert_eq!(
                OrdValue(a.clone()).cmp(&OrdValue(b.clone())),
                Ordering::Less,
                "{a:?} < {b:?}"
            );
            assert!(sort_key(&a) < sort_key(&b), "key of {a:?} < key of {b:?}");
        }
        assert_eq!(sort_key(&Datum::Float(-0.0)), sort_key(&Datum::Float(0.0)));
        assert_eq!(
            sort_key(&d(150, 2)),
            sort_key(&Datum::Dec(Decimal::new(1500, 3), 2))
        );
    }
}
