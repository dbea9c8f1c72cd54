//! Retractable aggregate accumulators and the per-group state.
//!
//! Every accumulator folds weighted values (+1 adds, −1 retracts) and its
//! result depends only on the multiset of values currently in the group,
//! never on the order they arrived in: COUNT/SUM/AVG keep exact sums (plus
//! per-type counts so the result type follows the values present); MIN, MAX
//! and COUNT(DISTINCT) keep a value → count multiset.

use crate::datum::{collate_cmp, collate_key, num_cmp, Datum, Num, MAX_SCALE};
use crate::eval::{decimal_div, Expr};
use crate::multiset::Multiset;
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    CountStar,
    Count,
    Sum,
    Avg,
    Min,
    Max,
    CountDistinct,
}

/// One aggregate call of a report (identical calls are shared).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AggSpec {
    pub kind: AggKind,
    /// The argument (None for COUNT(*)).
    pub arg: Option<Expr>,
}

/// A value in a multiset, ordered the way MySQL compares values of one
/// column: numbers by value, strings by the default collation (ties broken
/// by bytes so distinct spellings stay distinct), temporals in time order.
#[derive(Debug, Clone)]
pub(crate) struct OrdValue(pub Datum);

fn class(d: &Datum) -> u8 {
    match d {
        Datum::Null => 0,
        Datum::Int(_) | Datum::UInt(_) | Datum::Dec(..) | Datum::Float(_) => 1,
        Datum::Date(_) | Datum::DateTime(_) => 2,
        Datum::Time(_) => 3,
        Datum::Str(_) => 4,
        Datum::Bytes(_) => 5,
    }
}

fn value_cmp(a: &Datum, b: &Datum, tie_break: bool) -> Ordering {
    // The common cases of one column's values, as the general rule below
    // orders them (integers rank alike; decimals tie-break on their scale).
    match (a, b) {
        (Datum::Int(x), Datum::Int(y)) => return x.cmp(y),
        (Datum::Dec(x, sx), Datum::Dec(y, sy)) => {
            let o = x.cmp(y);
            return if o != Ordering::Equal || !tie_break {
                o
            } else {
                sx.cmp(sy)
            };
        }
        _ => {}
    }
    let (ca, cb) = (class(a), class(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    let o = match (a, b) {
        (Datum::Str(x), Datum::Str(y)) => {
            let o = collate_cmp(x, y);
            if o == Ordering::Equal && tie_break {
                x.cmp(y)
            } else {
                o
            }
        }
        (Datum::Bytes(x), Datum::Bytes(y)) => x.cmp(y),
        (Datum::Time(x), Datum::Time(y)) => x.cmp(y),
        (Datum::Date(_) | Datum::DateTime(_), Datum::Date(_) | Datum::DateTime(_)) => {
            a.to_datetime().cmp(&b.to_datetime())
        }
        _ => match (a.to_num(), b.to_num()) {
            (Some(x), Some(y)) => num_cmp(x, y),
            _ => Ordering::Equal,
        },
    };
    if o != Ordering::Equal || !tie_break {
        return o;
    }
    // Equal values of different types or scales (0 and 0.00) stay distinct
    // entries, so the result never depends on which arrived first.
    type_rank(a).cmp(&type_rank(b))
}

fn type_rank(d: &Datum) -> u32 {
    match d {
        Datum::Dec(_, s) => 1 + s,
        Datum::Float(_) => 100,
        Datum::DateTime(_) => 1,
        _ => 0,
    }
}

impl PartialEq for OrdValue {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for OrdValue {}
impl PartialOrd for OrdValue {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for OrdValue {
    fn cmp(&self, other: &Self) -> Ordering {
        value_cmp(&self.0, &other.0, true)
    }
}

/// The value a MIN, MAX or COUNT(DISTINCT) argument `v` is kept as in the
/// multiset (`None` for NULL, which is not kept).
pub(crate) fn multiset_key(kind: AggKind, v: &Datum) -> Option<OrdValue> {
    if v.is_null() {
        return None;
    }
    Some(if kind == AggKind::CountDistinct {
        // Values equal under the collation count once.
        match v {
            Datum::Str(s) => OrdValue(Datum::Str(collate_key(s))),
            other => OrdValue(other.clone().normalized()),
        }
    } else {
        OrdValue(v.clone())
    })
}

/// Exact sum of weighted values, split by type so the result type follows
/// the values present (integers → BIGINT, decimals → DECIMAL with the
/// largest scale present, any float → DOUBLE).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SumAcc {
    /// Σw over non-NULL values.
    pub count: i64,
    pub int_sum: i128,
    pub dec_sum: Decimal,
    /// Display scale → Σw of decimal values with that scale.
    pub dec_scales: BTreeMap<u32, i64>,
    pub float_count: i64,
    /// Neumaier-compensated float sum.
    pub float_sum: f64,
    pub float_comp: f64,
}

impl SumAcc {
    fn fold(&mut self, v: &Datum, w: i64) -> bool {
        let Some(n) = v.to_num() else {
            return true;
        };
        self.count += w;
        match n {
            Num::Int(i) => self.int_sum += i128::from(i) * i128::from(w),
            Num::UInt(u) => self.int_sum += i128::from(u) * i128::from(w),
            Num::Dec(d, s) => {
                let wd = Decimal::from(w);
                match d.checked_mul(wd).and_then(|x| self.dec_sum.checked_add(x)) {
                    Some(sum) => self.dec_sum = sum,
                    None => return false,
                }
                let e = self.dec_scales.entry(s).or_insert(0);
                *e += w;
                if *e == 0 {
                    self.dec_scales.remove(&s);
                }
            }
            Num::Float(x) => {
                self.float_count += w;
                let x = x * w as f64;
                let t = self.float_sum + x;
                if self.float_sum.abs() >= x.abs() {
                    self.float_comp += (self.float_sum - t) + x;
                } else {
                    self.float_comp += (x - t) + self.float_sum;
                }
                self.float_sum = t;
                if self.float_count == 0 {
                    // No float left: drop the rounding residue.
                    self.float_sum = 0.0;
                    self.float_comp = 0.0;
                }
            }
        }
        self.count >= 0 && self.float_count >= 0
    }

    fn is_empty(&self) -> bool {
        self.count == 0
            && self.int_sum == 0
            && self.dec_sum.is_zero()
            && self.dec_scales.is_empty()
            && self.float_count == 0
    }

    fn scale(&self) -> u32 {
        self.dec_scales.keys().next_back().copied().unwrap_or(0)
    }

    /// The exact total as a number (None when only NULLs or nothing).
    fn total(&self) -> Option<Num> {
        if self.count <= 0 {
            return None;
        }
        if self.float_count > 0 {
            let exact = Decimal::try_from_i128_with_scale(self.int_sum, 0)
                .ok()
                .and_then(|i| i.checked_add(self.dec_sum))
                .map_or(0.0, |d| Num::Dec(d, 0).to_f64());
            return Some(Num::Float(self.float_sum + self.float_comp + exact));
        }
        if self.dec_scales.is_empty() {
            return Some(match i64::try_from(self.int_sum) {
                Ok(i) => Num::Int(i),
                Err(_) => match Decimal::try_from_i128_with_scale(self.int_sum, 0) {
                    Ok(d) => Num::Dec(d, 0),
                    Err(_) => Num::Float(self.int_sum as f64),
                },
            });
        }
        let total = Decimal::try_from_i128_with_scale(self.int_sum, 0)
            .ok()
            .and_then(|i| i.checked_add(self.dec_sum));
        Some(match total {
            Some(d) => Num::Dec(d, self.scale()),
            None => Num::Float(self.int_sum as f64 + Num::Dec(self.dec_sum, 0).to_f64()),
        })
    }

    fn sum(&self) -> Datum {
        self.total().map_or(Datum::Null, Num::into_datum)
    }

    fn avg(&self) -> Datum {
        match self.total() {
            None => Datum::Null,
            Some(Num::Float(f)) => Datum::Float(f / self.count as f64),
            Some(n) => {
                let total = n.exact().unwrap_or_default();
                decimal_div(
                    total,
                    Decimal::from(self.count),
                    (n.scale() + 4).min(MAX_SCALE),
                )
                .unwrap_or_else(|| Datum::Float(n.to_f64() / self.count as f64))
            }
        }
    }
}

/// The state of one aggregate in one group.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum AccState {
    /// COUNT(*) and COUNT(x): Σw (over non-NULL x).
    Count(i64),
    /// SUM and AVG.
    Sum(SumAcc),
    /// MIN, MAX and COUNT(DISTINCT): value → Σw, zero entries removed.
    Multiset(Multiset),
}

impl AccState {
    pub(crate) fn new(kind: AggKind) -> AccState {
        match kind {
            AggKind::CountStar | AggKind::Count => AccState::Count(0),
            AggKind::Sum | AggKind::Avg => AccState::Sum(SumAcc::default()),
            AggKind::Min | AggKind::Max | AggKind::CountDistinct => {
                AccState::Multiset(Multiset::default())
            }
        }
    }

    /// Folds one weighted value; returns false when a retraction found
    /// nothing to retract (the state and the changes disagree).
    pub(crate) fn fold(&mut self, kind: AggKind, v: &Datum, w: i64) -> bool {
        match self {
            AccState::Count(n) => {
                if kind == AggKind::CountStar || !v.is_null() {
                    *n += w;
                }
                *n >= 0
            }
            AccState::Sum(s) => s.fold(v, w),
            AccState::Multiset(m) => {
                let Some(key) = multiset_key(kind, v) else {
                    return true;
                };
                // A chunk is read before a value it holds is folded.
                let Some(map) = m.map_for(&key) else {
                    return false;
                };
                let e = map.entry(key.clone()).or_insert(0);
                *e += w;
                let ok = *e >= 0;
                if *e <= 0 {
                    map.remove(&key);
                }
                ok
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        match self {
            AccState::Count(n) => *n == 0,
            AccState::Sum(s) => s.is_empty(),
            AccState::Multiset(m) => m.is_empty(),
        }
    }

    pub(crate) fn result(&self, kind: AggKind, rows: i64) -> Datum {
        match (kind, self) {
            (AggKind::CountStar, _) => Datum::Int(rows),
            (_, AccState::Count(n)) => Datum::Int(*n),
            (AggKind::Avg, AccState::Sum(s)) => s.avg(),
            (_, AccState::Sum(s)) => s.sum(),
            // A chunked multiset has the chunks of its extremes loaded
            // before results are read (see `crate::spill`).
            (AggKind::Min, AccState::Multiset(m)) => m.first().map_or(Datum::Null, |k| k.0.clone()),
            (AggKind::Max, AccState::Multiset(m)) => m.last().map_or(Datum::Null, |k| k.0.clone()),
            (_, AccState::Multiset(m)) => Datum::Int(m.len() as i64),
        }
    }
}

/// Everything kept for one group of one report.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GroupState {
    /// The GROUP BY values (normalized), so a group can be emitted as
    /// deleted without any row at hand.
    pub key: Vec<Datum>,
    /// Σw of the rows in the group; the group exists while > 0.
    pub rows: i64,
    pub accs: Vec<AccState>,
}

impl GroupState {
    pub(crate) fn new(key: Vec<Datum>, aggs: &[AggSpec]) -> GroupState {
        GroupState {
            key,
            rows: 0,
            accs: aggs.iter().map(|a| AccState::new(a.kind)).collect(),
        }
    }

    /// Every aggregate's current result.
    pub(crate) fn results(&self, aggs: &[AggSpec]) -> Vec<Datum> {
        aggs.iter()
            .zip(&self.accs)
            .map(|(spec, acc)| acc.result(spec.kind, self.rows))
            .collect()
    }
}

impl SumAcc {
    /// Adds `sign` × `other` (sign ±1) field by field; false on decimal
    /// overflow.
    fn add_scaled(&mut self, other: &SumAcc, sign: i64) -> bool {
        self.count += sign * other.count;
        self.int_sum += i128::from(sign) * other.int_sum;
        let d = if sign < 0 {
            -other.dec_sum
        } else {
            other.dec_sum
        };
        match self.dec_sum.checked_add(d) {
            Some(x) => self.dec_sum = x,
            None => return false,
        }
        for (scale, w) in &other.dec_scales {
            let e = self.dec_scales.entry(*scale).or_insert(0);
            *e += sign * w;
            if *e == 0 {
                self.dec_scales.remove(scale);
            }
        }
        self.float_count += sign * other.float_count;
        let s = sign as f64;
        self.float_sum += s * other.float_sum;
        self.float_comp += s * other.float_comp;
        if self.float_count == 0 {
            self.float_sum = 0.0;
            self.float_comp = 0.0;
        }
        true
    }
}

impl AccState {
    /// Adds `sign` × `other` (the same kind of accumulator); false when the
    /// kinds differ or a sum overflows.
    fn add_scaled(&mut self, other: &AccState, sign: i64) -> bool {
        match (self, other) {
            (AccState::Count(a), AccState::Count(b)) => {
                *a += sign * b;
                true
            }
            (AccState::Sum(a), AccState::Sum(b)) => a.add_scaled(b, sign),
            // Chunks of `b` not read would be left out, and chunks of `a` not
            // read cannot take values.
            (AccState::Multiset(a), AccState::Multiset(b)) => a.add_all(b, sign),
            _ => false,
        }
    }
}

/// `new − old` entry by entry (zero entries left out), walking both in order.
fn multiset_diff(new: &Multiset, old: &Multiset) -> BTreeMap<OrdValue, i64> {
    let mut out = Vec::new();
    let (mut a, mut b) = (new.iter().peekable(), old.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some((ka, wa)), Some((kb, wb))) => match ka.cmp(kb) {
                Ordering::Less => {
                    out.push(((*ka).clone(), **wa));
                    a.next();
                }
                Ordering::Greater => {
                    out.push(((*kb).clone(), -**wb));
                    b.next();
                }
                Ordering::Equal => {
                    if wa != wb {
                        out.push(((*ka).clone(), **wa - **wb));
                    }
                    a.next();
                    b.next();
                }
            },
            (Some((ka, wa)), None) => {
                out.push(((*ka).clone(), **wa));
                a.next();
            }
            (None, Some((kb, wb))) => {
                out.push(((*kb).clone(), -**wb));
                b.next();
            }
            (None, None) => break,
        }
    }
    out.into_iter().collect()
}

impl GroupState {
    /// The accumulator difference `new − old` of one group (either side may
    /// be absent: no rows). Multiset entries may be negative; adding the
    /// difference to `old` with [`GroupState::merge`] gives `new`.
    pub(crate) fn delta(
        key: &[Datum],
        aggs: &[AggSpec],
        old: Option<&GroupState>,
        new: Option<&GroupState>,
    ) -> Result<GroupState, String> {
        let empty = GroupState::new(key.to_vec(), aggs);
        let (new, old) = (new.unwrap_or(&empty), old.unwrap_or(&empty));
        for st in [new, old] {
            if st.accs.len() != aggs.len() {
                return Err(format!(
                    "{} accumulators where {} were expected",
                    st.accs.len(),
                    aggs.len()
                ));
            }
        }
        let mut d = empty.clone();
        d.rows = new.rows - old.rows;
        for ((acc, n), o) in d.accs.iter_mut().zip(&new.accs).zip(&old.accs) {
            if let (AccState::Multiset(n), AccState::Multiset(o)) = (n, o) {
                // One ordered walk: a window changes few values of a large
                // multiset. Of a chunked multiset, both sides hold the
                // same chunks (those read in this call).
                *acc = AccState::Multiset(Multiset {
                    map: multiset_diff(n, o),
                    chunks: None,
                });
                continue;
            }
            if !(acc.add_scaled(n, 1) && acc.add_scaled(o, -1)) {
                return Err("accumulator kinds differ or a sum overflows".into());
            }
        }
        Ok(d)
    }

    /// Whether a difference changes nothing.
    pub(crate) fn is_zero(&self) -> bool {
        self.rows == 0 && self.accs.iter().all(AccState::is_empty) && {
            // A float residue without floats is no change either.
            self.accs.iter().all(|a| match a {
                AccState::Sum(s) => s.float_sum == 0.0 && s.float_comp == 0.0,
                _ => true,
            })
        }
    }

    /// Adds a difference made by [`GroupState::delta`] (of any partition, in
    /// any order).
    pub(crate) fn merge(&mut self, delta: &GroupState) -> Result<(), String> {
        self.add_scaled(delta, 1)
    }

    /// Adds (`sign` = 1) or subtracts (−1) the rows and accumulators of
    /// another state of the same report (a rolled-up sub-aggregate); the key
    /// is left as it is.
    pub(crate) fn absorb(&mut self, other: &GroupState, sign: i64) -> Result<(), String> {
        self.add_scaled(other, sign)
    }

    fn add_scaled(&mut self, other: &GroupState, sign: i64) -> Result<(), String> {
        if other.accs.len() != self.accs.len() {
            return Err(format!(
                "{} accumulators where {} were expected",
                other.accs.len(),
                self.accs.len()
            ));
        }
        self.rows += sign * other.rows;
        for (a, b) in self.accs.iter_mut().zip(&other.accs) {
            if !a.add_scaled(b, sign) {
                return Err("accumulator kinds differ or a sum overflows".into());
            }
        }
        Ok(())
    }

    /// Whether every count is non-negative (a merged state is consistent).
    pub(crate) fn is_consistent(&self) -> bool {
        self.rows >= 0
            && self.accs.iter().all(|a| match a {
                AccState::Count(n) => *n >= 0,
                AccState::Sum(s) => {
                    s.count >= 0 && s.float_count >= 0 && s.dec_scales.values().all(|w| *w > 0)
                }
                AccState::Multiset(m) => m.iter().all(|(_, w)| *w > 0),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::Value;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    fn d(s: &str) -> Datum {
        let x = dec(s);
        Datum::Dec(x, x.scale())
    }

    #[test]
    fn min_and_max_survive_retraction_of_the_extreme() {
        let mut min = AccState::new(AggKind::Min);
        let mut max = AccState::new(AggKind::Max);
        for v in ["5.00", "3.00", "9.00", "3.00"] {
            assert!(min.fold(AggKind::Min, &d(v), 1));
            assert!(max.fold(AggKind::Max, &d(v), 1));
        }
        assert_eq!(
            min.result(AggKind::Min, 4).to_value(),
            Value::D(dec("3.00"))
        );
        // One of two 3.00 leaves: still 3.00.
        assert!(min.fold(AggKind::Min, &d("3.00"), -1));
        assert_eq!(
            min.result(AggKind::Min, 3).to_value(),
            Value::D(dec("3.00"))
        );
        assert!(min.fold(AggKind::Min, &d("3.00"), -1));
        assert_eq!(
            min.result(AggKind::Min, 2).to_value(),
            Value::D(dec("5.00"))
        );
        assert!(max.fold(AggKind::Max, &d("9.00"), -1));
        assert_eq!(
            max.result(AggKind::Max, 3).to_value(),
            Value::D(dec("5.00"))
        );
        // Retracting a value that is not there is reported.
        assert!(!min.fold(AggKind::Min, &d("1.00"), -1));
    }

    #[test]
    fn distinct_values_leave_groups() {
        let mut acc = AccState::new(AggKind::CountDistinct);
        let s = |x: &str| Datum::Str(x.into());
        for v in ["a", "b", "A", "b "] {
            acc.fold(AggKind::CountDistinct, &s(v), 1);
        }
        // 'a' = 'A' and 'b' = 'b ' under utf8mb4_general_ci.
        assert_eq!(acc.result(AggKind::CountDistinct, 4), Datum::Int(2));
        acc.fold(AggKind::CountDistinct, &s("a"), -1);
        assert_eq!(acc.result(AggKind::CountDistinct, 3), Datum::Int(2));
        acc.fold(AggKind::CountDistinct, &s("A"), -1);
        assert_eq!(acc.result(AggKind::CountDistinct, 2), Datum::Int(1));
        acc.fold(AggKind::CountDistinct, &Datum::Null, 1);
        assert_eq!(acc.result(AggKind::CountDistinct, 3), Datum::Int(1));
    }

    #[test]
    fn deltas_merge_back_to_the_new_state() {
        let specs = [
            AggSpec {
                kind: AggKind::CountDistinct,
                arg: None,
            },
            AggSpec {
                kind: AggKind::Sum,
                arg: None,
            },
        ];
        let state = |values: &[i64]| {
            let mut st = GroupState::new(vec![Datum::Int(1)], &specs);
            for v in values {
                st.rows += 1;
                st.accs[0].fold(AggKind::CountDistinct, &Datum::Int(*v), 1);
                st.accs[1].fold(AggKind::Sum, &d(&format!("{v}.5")), 1);
            }
            st
        };
        let old = state(&[1, 2, 2, 5, 9]);
        let new = state(&[2, 3, 5, 5, 9, 11]);
        let key = [Datum::Int(1)];
        let delta = GroupState::delta(&key, &specs, Some(&old), Some(&new))
            .unwrap_or_else(|e| panic!("{e}"));
        // Only the values whose counts changed are in the difference.
        let AccState::Multiset(m) = &delta.accs[0] else {
            panic!("a multiset difference")
        };
        let changed: Vec<(i64, i64)> = m
            .map
            .iter()
            .map(|(v, w)| match v.0 {
                Datum::Int(i) => (i, *w),
                _ => (0, *w),
            })
            .collect();
        assert_eq!(changed, [(1, -1), (2, -1), (3, 1), (5, 1), (11, 1)]);
        let mut merged = old.clone();
        merged.merge(&delta).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(merged, new);
        // From nothing and to nothing.
        let created =
            GroupState::delta(&key, &specs, None, Some(&new)).unwrap_or_else(|e| panic!("{e}"));
        let mut from_empty = GroupState::new(key.to_vec(), &specs);
        from_empty.merge(&created).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(from_empty, new);
        let dropped =
            GroupState::delta(&key, &specs, Some(&old), None).unwrap_or_else(|e| panic!("{e}"));
        let mut emptied = old.clone();
        emptied.merge(&dropped).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(emptied.rows, 0);
        assert!(emptied.accs.iter().all(AccState::is_empty));
    }

    #[test]
    fn sums_stay_exact_and_typed() {
        let mut s = AccState::new(AggKind::Sum);
        assert_eq!(s.result(AggKind::Sum, 0), Datum::Null);
        s.fold(AggKind::Sum, &Datum::Null, 1);
        assert_eq!(s.result(AggKind::Sum, 1), Datum::Null);
        s.fold(AggKind::Sum, &d("0.10"), 1);
        s.fold(AggKind::Sum, &d("0.20"), 1);
        assert_eq!(s.result(AggKind::Sum, 3).to_value(), Value::D(dec("0.30")));
        assert_eq!(
            s.result(AggKind::Avg, 3).to_value(),
            Value::D(dec("0.150000"))
        );
        s.fold(AggKind::Sum, &d("0.10"), -1);
        s.fold(AggKind::Sum, &d("0.20"), -1);
        assert_eq!(s.result(AggKind::Sum, 1), Datum::Null);
        assert!(s.is_empty());
        let mut i = AccState::new(AggKind::Avg);
        for v in [1, 2, 2] {
            i.fold(AggKind::Avg, &Datum::Int(v), 1);
        }
        assert_eq!(i.result(AggKind::Sum, 3), Datum::Int(5));
        assert_eq!(
            i.result(AggKind::Avg, 3).to_value(),
            Value::D(dec("1.6667"))
        );
    }
}
