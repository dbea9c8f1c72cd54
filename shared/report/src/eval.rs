//! Compiled scalar expressions and their evaluation with MySQL semantics.
//!
//! One expression type serves both sides of the aggregation: before it,
//! column references read the current row of each relation (a "row
//! context", so joins only add relations); after it, `Key(i)` and `Agg(j)`
//! read the group's key values and aggregate results.

use crate::datum::{
    coerce, common_type, parse_decimal_prefix, parse_i64_prefix, round_to_scale, sql_cmp, sql_eq,
    Datum, Num, MAX_SCALE,
};
use crate::functions::{call, Func};
use chrono::NaiveTime;
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::{Decimal, RoundingStrategy};
use std::cmp::Ordering;

/// A position in the SQL text (1-based). Never part of expression equality,
/// so that `GROUP BY x` matches a select item `x` written elsewhere.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Loc {
    pub line: u64,
    pub column: u64,
}

impl PartialEq for Loc {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// `ColRef::rel` of an unqualified column of a report with joins that the
/// report does not tie to one table: it is read from the joined relation
/// whose row has it.
pub(crate) const LATE_BOUND: usize = usize::MAX;

/// A column of one of the query's relations (0 = the fact table).
#[derive(Debug, Clone)]
pub(crate) struct ColRef {
    /// The relation, or [`LATE_BOUND`].
    pub rel: usize,
    /// Lower-cased column name (MySQL column names are case-insensitive).
    pub name: String,
    /// The name as written (messages).
    pub written: String,
    pub loc: Loc,
}

impl PartialEq for ColRef {
    fn eq(&self, other: &Self) -> bool {
        self.rel == other.rel && self.name == other.name
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArithOp {
    Add,
    Sub,
    Mul,
    Div,
    IntDiv,
    Mod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    /// `<=>`: NULL-safe equality.
    NullSafeEq,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogicOp {
    And,
    Or,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    Signed,
    Unsigned,
    /// DECIMAL(precision, scale).
    Decimal(u32, u32),
    Double,
    Char(Option<u64>),
    Date,
    DateTime,
    Time,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Expr {
    Lit(Datum),
    Col(ColRef),
    /// The group's i-th GROUP BY value (after aggregation).
    Key(usize),
    /// The group's j-th aggregate result (after aggregation).
    Agg(usize),
    Neg(Box<Expr>),
    Not(Box<Expr>),
    Arith(ArithOp, Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
    Logic(LogicOp, Box<Expr>, Box<Expr>),
    IsNull {
        expr: Box<Expr>,
        negated: bool,
    },
    IsBool {
        expr: Box<Expr>,
        value: bool,
        negated: bool,
    },
    InList {
        expr: Box<Expr>,
        list: Vec<Expr>,
        negated: bool,
    },
    Between {
        expr: Box<Expr>,
        low: Box<Expr>,
        high: Box<Expr>,
        negated: bool,
    },
    Like {
        expr: Box<Expr>,
        pattern: Box<Expr>,
        escape: char,
        negated: bool,
    },
    Case {
        operand: Option<Box<Expr>>,
        whens: Vec<(Expr, Expr)>,
        otherwise: Option<Box<Expr>>,
    },
    Func(Func, Vec<Expr>),
    Cast(Box<Expr>, CastTo),
}

/// Where an expression reads its inputs.
pub(crate) trait Ctx {
    fn column(&self, c: &ColRef) -> Datum;
    fn key(&self, i: usize) -> Datum;
    fn agg(&self, j: usize) -> Datum;
}

impl Expr {
    /// Calls `f` on this expression and every sub-expression.
    pub(crate) fn walk<'a>(&'a self, f: &mut dyn FnMut(&'a Expr)) {
        f(self);
        match self {
            Expr::Lit(_) | Expr::Col(_) | Expr::Key(_) | Expr::Agg(_) => {}
            Expr::Neg(e) | Expr::Not(e) | Expr::Cast(e, _) => e.walk(f),
            Expr::IsNull { expr, .. } | Expr::IsBool { expr, .. } => expr.walk(f),
            Expr::Arith(_, a, b) | Expr::Cmp(_, a, b) | Expr::Logic(_, a, b) => {
                a.walk(f);
                b.walk(f);
            }
            Expr::InList { expr, list, .. } => {
                expr.walk(f);
                list.iter().for_each(|e| e.walk(f));
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                expr.walk(f);
                low.walk(f);
                high.walk(f);
            }
            Expr::Like { expr, pattern, .. } => {
                expr.walk(f);
                pattern.walk(f);
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                if let Some(o) = operand {
                    o.walk(f);
                }
                for (w, t) in whens {
                    w.walk(f);
                    t.walk(f);
                }
                if let Some(o) = otherwise {
                    o.walk(f);
                }
            }
            Expr::Func(_, args) => args.iter().for_each(|e| e.walk(f)),
        }
    }

    /// Rebuilds the expression bottom-up through `f`, which may replace a
    /// node (return `Ok(Some(new))`) or let its children be visited.
    pub(crate) fn rewrite<E>(
        self,
        f: &mut dyn FnMut(&Expr) -> Result<Option<Expr>, E>,
    ) -> Result<Expr, E> {
        if let Some(new) = f(&self)? {
            return Ok(new);
        }
        fn r<E>(
            e: Expr,
            f: &mut dyn FnMut(&Expr) -> Result<Option<Expr>, E>,
        ) -> Result<Box<Expr>, E> {
            Ok(Box::new(e.rewrite(f)?))
        }
        Ok(match self {
            e @ (Expr::Lit(_) | Expr::Col(_) | Expr::Key(_) | Expr::Agg(_)) => e,
            Expr::Neg(e) => Expr::Neg(r(*e, f)?),
            Expr::Not(e) => Expr::Not(r(*e, f)?),
            Expr::Cast(e, t) => Expr::Cast(r(*e, f)?, t),
            Expr::IsNull { expr, negated } => Expr::IsNull {
                expr: r(*expr, f)?,
                negated,
            },
            Expr::IsBool {
                expr,
                value,
                negated,
            } => Expr::IsBool {
                expr: r(*expr, f)?,
                value,
                negated,
            },
            Expr::Arith(op, a, b) => Expr::Arith(op, r(*a, f)?, r(*b, f)?),
            Expr::Cmp(op, a, b) => Expr::Cmp(op, r(*a, f)?, r(*b, f)?),
            Expr::Logic(op, a, b) => Expr::Logic(op, r(*a, f)?, r(*b, f)?),
            Expr::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: r(*expr, f)?,
                list: list
                    .into_iter()
                    .map(|e| e.rewrite(f))
                    .collect::<Result<_, E>>()?,
                negated,
            },
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => Expr::Between {
                expr: r(*expr, f)?,
                low: r(*low, f)?,
                high: r(*high, f)?,
                negated,
            },
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
            } => Expr::Like {
                expr: r(*expr, f)?,
                pattern: r(*pattern, f)?,
                escape,
                negated,
            },
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => Expr::Case {
                operand: operand.map(|o| r(*o, f)).transpose()?,
                whens: whens
                    .into_iter()
                    .map(|(w, t)| Ok((w.rewrite(f)?, t.rewrite(f)?)))
                    .collect::<Result<_, E>>()?,
                otherwise: otherwise.map(|o| r(*o, f)).transpose()?,
            },
            Expr::Func(func, args) => Expr::Func(
                func,
                args.into_iter()
                    .map(|e| e.rewrite(f))
                    .collect::<Result<_, E>>()?,
            ),
        })
    }

    pub(crate) fn has_columns(&self) -> bool {
        let mut found = false;
        self.walk(&mut |e| found |= matches!(e, Expr::Col(_)));
        found
    }

    /// Evaluates the expression; never fails: bad data yields NULL or MySQL's
    /// converted value.
    pub(crate) fn eval(&self, cx: &dyn Ctx) -> Datum {
        match self {
            Expr::Lit(d) => d.clone(),
            Expr::Col(c) => cx.column(c),
            Expr::Key(i) => cx.key(*i),
            Expr::Agg(j) => cx.agg(*j),
            Expr::Neg(e) => match e.eval(cx).to_num() {
                None => Datum::Null,
                Some(n) => negate(n),
            },
            Expr::Not(e) => Datum::opt_bool(e.eval(cx).truth().map(|b| !b)),
            Expr::Arith(op, a, b) => {
                let (a, b) = (a.eval(cx), b.eval(cx));
                match (a.to_num(), b.to_num()) {
                    (Some(x), Some(y)) => arith(*op, x, y),
                    _ => Datum::Null,
                }
            }
            Expr::Cmp(op, a, b) => {
                let (a, b) = (a.eval(cx), b.eval(cx));
                if *op == CmpOp::NullSafeEq {
                    return Datum::bool(match (a.is_null(), b.is_null()) {
                        (true, true) => true,
                        (false, false) => sql_eq(&a, &b) == Some(true),
                        _ => false,
                    });
                }
                Datum::opt_bool(sql_cmp(&a, &b).map(|o| match op {
                    CmpOp::Eq | CmpOp::NullSafeEq => o == Ordering::Equal,
                    CmpOp::Ne => o != Ordering::Equal,
                    CmpOp::Lt => o == Ordering::Less,
                    CmpOp::Le => o != Ordering::Greater,
                    CmpOp::Gt => o == Ordering::Greater,
                    CmpOp::Ge => o != Ordering::Less,
                }))
            }
            Expr::Logic(op, a, b) => {
                let x = a.eval(cx).truth();
                match op {
                    LogicOp::And => {
                        if x == Some(false) {
                            return Datum::bool(false);
                        }
                        match (x, b.eval(cx).truth()) {
                            (_, Some(false)) => Datum::bool(false),
                            (Some(true), Some(true)) => Datum::bool(true),
                            _ => Datum::Null,
                        }
                    }
                    LogicOp::Or => {
                        if x == Some(true) {
                            return Datum::bool(true);
                        }
                        match (x, b.eval(cx).truth()) {
                            (_, Some(true)) => Datum::bool(true),
                            (Some(false), Some(false)) => Datum::bool(false),
                            _ => Datum::Null,
                        }
                    }
                }
            }
            Expr::IsNull { expr, negated } => Datum::bool(expr.eval(cx).is_null() != *negated),
            Expr::IsBool {
                expr,
                value,
                negated,
            } => {
                let t = expr.eval(cx).truth();
                Datum::bool((t == Some(*value)) != *negated)
            }
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let v = expr.eval(cx);
                if v.is_null() {
                    return Datum::Null;
                }
                let mut saw_null = false;
                for item in list {
                    match sql_eq(&v, &item.eval(cx)) {
                        Some(true) => return Datum::bool(!*negated),
                        Some(false) => {}
                        None => saw_null = true,
                    }
                }
                if saw_null {
                    Datum::Null
                } else {
                    Datum::bool(*negated)
                }
            }
            Expr::Between {
                expr,
                low,
                high,
                negated,
            } => {
                let v = expr.eval(cx);
                let ge = sql_cmp(&v, &low.eval(cx)).map(|o| o != Ordering::Less);
                let le = sql_cmp(&v, &high.eval(cx)).map(|o| o != Ordering::Greater);
                let within = match (ge, le) {
                    (Some(false), _) | (_, Some(false)) => Some(false),
                    (Some(true), Some(true)) => Some(true),
                    _ => None,
                };
                Datum::opt_bool(within.map(|w| w != *negated))
            }
            Expr::Like {
                expr,
                pattern,
                escape,
                negated,
            } => {
                let (v, p) = (expr.eval(cx), pattern.eval(cx));
                match (v.to_text(), p.to_text()) {
                    (Some(v), Some(p)) => Datum::bool(like(&v, &p, *escape) != *negated),
                    _ => Datum::Null,
                }
            }
            Expr::Case {
                operand,
                whens,
                otherwise,
            } => {
                // Every branch is evaluated so the result takes the branches'
                // common type, as MySQL types a CASE statically.
                let results: Vec<Datum> = whens
                    .iter()
                    .map(|(_, t)| t.eval(cx))
                    .chain(otherwise.iter().map(|e| e.eval(cx)))
                    .collect();
                let common = common_type(&results);
                let op = operand.as_ref().map(|o| o.eval(cx));
                let mut chosen = None;
                for (i, (w, _)) in whens.iter().enumerate() {
                    let hit = match &op {
                        Some(o) => sql_eq(o, &w.eval(cx)) == Some(true),
                        None => w.eval(cx).truth() == Some(true),
                    };
                    if hit {
                        chosen = Some(i);
                        break;
                    }
                }
                let idx = match chosen {
                    Some(i) => i,
                    None if otherwise.is_some() => whens.len(),
                    None => return Datum::Null,
                };
                let v = results.into_iter().nth(idx).unwrap_or(Datum::Null);
                coerce(v, common)
            }
            Expr::Func(f, args) => {
                let vals: Vec<Datum> = args.iter().map(|a| a.eval(cx)).collect();
                call(*f, vals)
            }
            Expr::Cast(e, to) => cast(e.eval(cx), *to),
        }
    }
}

/// The number of fractional digits MySQL keeps internally for `a / b`:
/// whole 9-digit words, `div_precision_increment` (4) more than the
/// operands' scales.
fn division_frac(f1: u32, f2: u32) -> u32 {
    let words = |f: u32| f.div_ceil(9);
    let (w1, w2) = (words(f1), words(f2));
    let spare = (9 * w1 - f1) + (9 * w2 - f2);
    let extra = u32::from(spare < 4);
    (9 * (w1 + w2 + extra)).min(MAX_SCALE)
}

/// MySQL's decimal division: exact quotient truncated to the internal
/// scale, shown with `display` digits.
pub(crate) fn decimal_div(x: Decimal, y: Decimal, display: u32) -> Option<Datum> {
    if y.is_zero() {
        return Some(Datum::Null);
    }
    let frac = division_frac(x.scale(), y.scale());
    let q = x.checked_div(y)?;
    let q = if q.scale() > frac {
        q.round_dp_with_strategy(frac, RoundingStrategy::ToZero)
    } else {
        q
    };
    Some(Datum::Dec(q, display.min(MAX_SCALE)))
}

fn negate(n: Num) -> Datum {
    match n {
        Num::Int(i) => match i.checked_neg() {
            Some(v) => Datum::Int(v),
            None => Datum::Dec(-Decimal::from(i), 0),
        },
        Num::UInt(u) => match i64::try_from(u) {
            Ok(v) => Datum::Int(-v),
            Err(_) => Datum::Dec(-Decimal::from(u), 0),
        },
        Num::Dec(d, s) => Datum::Dec(-d, s),
        Num::Float(f) => Datum::Float(-f),
    }
}

fn int_result(v: i128) -> Datum {
    if let Ok(i) = i64::try_from(v) {
        Datum::Int(i)
    } else if let Ok(u) = u64::try_from(v) {
        Datum::UInt(u)
    } else {
        match Decimal::try_from_i128_with_scale(v, 0) {
            Ok(d) => Datum::Dec(d, 0),
            Err(_) => Datum::Float(v as f64),
        }
    }
}

fn as_i128(n: Num) -> Option<i128> {
    match n {
        Num::Int(i) => Some(i128::from(i)),
        Num::UInt(u) => Some(i128::from(u)),
        _ => None,
    }
}

/// Binary arithmetic on two non-NULL numbers.
pub(crate) fn arith(op: ArithOp, x: Num, y: Num) -> Datum {
    let float = matches!(x, Num::Float(_)) || matches!(y, Num::Float(_));
    if float {
        let (a, b) = (x.to_f64(), y.to_f64());
        let r = match op {
            ArithOp::Add => a + b,
            ArithOp::Sub => a - b,
            ArithOp::Mul => a * b,
            ArithOp::Div => {
                if b == 0.0 {
                    return Datum::Null;
                }
                a / b
            }
            ArithOp::IntDiv => {
                if b == 0.0 {
                    return Datum::Null;
                }
                let q = (a / b).trunc();
                return if q.abs() < 9.2e18 {
                    Datum::Int(q as i64)
                } else {
                    Datum::Null
                };
            }
            ArithOp::Mod => {
                if b == 0.0 {
                    return Datum::Null;
                }
                a % b
            }
        };
        return if r.is_finite() {
            Datum::Float(r)
        } else {
            Datum::Null
        };
    }
    if let (Some(a), Some(b)) = (as_i128(x), as_i128(y)) {
        return match op {
            ArithOp::Add => int_result(a + b),
            ArithOp::Sub => int_result(a - b),
            ArithOp::Mul => match a.checked_mul(b) {
                Some(v) => int_result(v),
                None => Datum::Float(a as f64 * b as f64),
            },
            ArithOp::Div => decimal_div(
                Decimal::from_i128_with_scale(a, 0),
                Decimal::from_i128_with_scale(b, 0),
                4,
            )
            .unwrap_or(Datum::Null),
            ArithOp::IntDiv => {
                if b == 0 {
                    Datum::Null
                } else {
                    int_result(a / b)
                }
            }
            ArithOp::Mod => {
                if b == 0 {
                    Datum::Null
                } else {
                    int_result(a % b)
                }
            }
        };
    }
    // At least one exact decimal.
    let (Some(a), Some(b)) = (x.exact(), y.exact()) else {
        return Datum::Null;
    };
    let (sa, sb) = (x.scale(), y.scale());
    let fallback = || arith_float(op, x.to_f64(), y.to_f64());
    match op {
        ArithOp::Add => a
            .checked_add(b)
            .map_or_else(fallback, |r| Datum::Dec(r, sa.max(sb))),
        ArithOp::Sub => a
            .checked_sub(b)
            .map_or_else(fallback, |r| Datum::Dec(r, sa.max(sb))),
        ArithOp::Mul => a
            .checked_mul(b)
            .map_or_else(fallback, |r| Datum::Dec(r, (sa + sb).min(MAX_SCALE))),
        ArithOp::Div => decimal_div(a, b, sa + 4).unwrap_or_else(fallback),
        ArithOp::IntDiv => {
            if b.is_zero() {
                return Datum::Null;
            }
            match a.checked_div(b).and_then(|q| q.trunc().to_i64()) {
                Some(q) => Datum::Int(q),
                None => Datum::Null,
            }
        }
        ArithOp::Mod => {
            if b.is_zero() {
                return Datum::Null;
            }
            a.checked_rem(b)
                .map_or(Datum::Null, |r| Datum::Dec(r, sa.max(sb)))
        }
    }
}

fn arith_float(op: ArithOp, a: f64, b: f64) -> Datum {
    arith(op, Num::Float(a), Num::Float(b))
}

/// `LIKE` with `%`, `_` and an escape character, case-insensitive under the
/// default collation (trailing spaces are significant, as in MySQL).
pub(crate) fn like(value: &str, pattern: &str, escape: char) -> bool {
    let fold = |c: char| c.to_uppercase().next().unwrap_or(c);
    let v: Vec<char> = value.chars().map(fold).collect();
    // Pattern tokens: Some(c) literal, None for `_`, and `%` as a separate marker.
    #[derive(Clone, Copy, PartialEq)]
    enum Tok {
        Lit(char),
        One,
        Any,
    }
    let mut toks = Vec::new();
    let mut it = pattern.chars();
    while let Some(c) = it.next() {
        if c == escape {
            match it.next() {
                Some(n) => toks.push(Tok::Lit(fold(n))),
                None => toks.push(Tok::Lit(fold(c))),
            }
        } else if c == '%' {
            if toks.last() != Some(&Tok::Any) {
                toks.push(Tok::Any);
            }
        } else if c == '_' {
            toks.push(Tok::One);
        } else {
            toks.push(Tok::Lit(fold(c)));
        }
    }
    // Iterative matcher with backtracking to the last `%`.
    let (mut vi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while vi < v.len() {
        match toks.get(ti) {
            Some(Tok::Lit(c)) if *c == v[vi] => {
                vi += 1;
                ti += 1;
            }
            Some(Tok::One) => {
                vi += 1;
                ti += 1;
            }
            Some(Tok::Any) => {
                star = Some((ti, vi));
                ti += 1;
            }
            _ => match star {
                Some((st, sv)) => {
                    ti = st + 1;
                    vi = sv + 1;
                    star = Some((st, sv + 1));
                }
                None => return false,
            },
        }
    }
    toks[ti..].iter().all(|t| *t == Tok::Any)
}

/// `CAST(v AS to)`.
pub(crate) fn cast(v: Datum, to: CastTo) -> Datum {
    if v.is_null() {
        return v;
    }
    match to {
        CastTo::Signed | CastTo::Unsigned => {
            let i: i128 = match &v {
                Datum::Int(i) => i128::from(*i),
                Datum::UInt(u) => i128::from(*u),
                Datum::Dec(d, _) => d
                    .round_dp_with_strategy(0, RoundingStrategy::MidpointAwayFromZero)
                    .to_i128()
                    .unwrap_or(0),
                Datum::Float(f) => f.round() as i128,
                Datum::Str(s) => i128::from(parse_i64_prefix(s)),
                Datum::Bytes(b) => i128::from(parse_i64_prefix(&String::from_utf8_lossy(b))),
                other => other
                    .to_num()
                    .and_then(|n| n.exact())
                    .and_then(|d| d.trunc().to_i128())
                    .unwrap_or(0),
            };
            if to == CastTo::Unsigned {
                // Negative values wrap around 2^64, as in MySQL.
                let u = (i.rem_euclid(1i128 << 64)) as u64;
                Datum::UInt(u).normalized()
            } else if let Ok(x) = i64::try_from(i) {
                Datum::Int(x)
            } else {
                // MySQL's SIGNED cast of a large unsigned wraps too.
                Datum::Int(i as i64)
            }
        }
        CastTo::Decimal(p, s) => {
            let d = match &v {
                Datum::Str(t) => parse_decimal_prefix(t),
                Datum::Bytes(b) => parse_decimal_prefix(&String::from_utf8_lossy(b)),
                other => match other.to_num() {
                    Some(Num::Float(f)) => Decimal::try_from(f).unwrap_or(Decimal::ZERO),
                    Some(n) => n.exact().unwrap_or(Decimal::ZERO),
                    None => return Datum::Null,
                },
            };
            let s = s.min(MAX_SCALE);
            let r = round_to_scale(d, s);
            // Out of range values saturate at the largest DECIMAL(p, s).
            let r = if p <= MAX_SCALE && s <= p {
                let max = Decimal::from_i128_with_scale(10i128.pow(p) - 1, s);
                r.clamp(-max, max)
            } else {
                r
            };
            Datum::Dec(r, s)
        }
        CastTo::Double => v.to_num().map_or(Datum::Null, |n| Datum::Float(n.to_f64())),
        CastTo::Char(len) => match v.to_text() {
            Some(t) => match len {
                Some(n) => Datum::Str(t.chars().take(n as usize).collect()),
                None => Datum::Str(t),
            },
            None => Datum::Null,
        },
        CastTo::Date => v.to_date().map_or(Datum::Null, Datum::Date),
        CastTo::DateTime => match v {
            Datum::Time(t) => Datum::Time(t),
            other => other.to_datetime().map_or(Datum::Null, Datum::DateTime),
        },
        CastTo::Time => match v {
            Datum::Date(_) => Datum::Time(NaiveTime::MIN),
            other => other.to_time().map_or(Datum::Null, Datum::Time),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::Value;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap_or_default()
    }

    /// The value as MySQL shows it (decimals with their display scale).
    fn out(d: Datum) -> String {
        d.to_text().unwrap_or_else(|| "NULL".into())
    }

    #[test]
    fn division_follows_mysql_precision() {
        // 2/3 keeps 9 truncated digits internally, shows 4.
        let q = arith(ArithOp::Div, Num::Int(2), Num::Int(3));
        assert_eq!(q, Datum::Dec(dec("0.666666666"), 4));
        assert_eq!(out(q.clone()), "0.6667");
        let n = q.to_num().unwrap_or(Num::Int(0));
        assert_eq!(
            out(arith(ArithOp::Mul, n, Num::Int(1_000_000_000))),
            "666666666.0000"
        );
        // 1.000000/3 keeps 18 digits (one more word), shows 10.
        let q = arith(ArithOp::Div, Num::Dec(dec("1.000000"), 6), Num::Int(3));
        assert_eq!(q, Datum::Dec(dec("0.333333333333333333"), 10));
        assert_eq!(arith(ArithOp::Div, Num::Int(1), Num::Int(0)), Datum::Null);
        assert_eq!(division_frac(2, 0), 9);
        assert_eq!(division_frac(6, 0), 18);
        assert_eq!(division_frac(2, 2), 18);
    }

    #[test]
    fn integer_arithmetic_and_overflow() {
        assert_eq!(arith(ArithOp::Add, Num::Int(2), Num::Int(3)), Datum::Int(5));
        assert_eq!(
            arith(ArithOp::IntDiv, Num::Int(5), Num::Int(2)),
            Datum::Int(2)
        );
        assert_eq!(
            arith(ArithOp::Mod, Num::Int(-7), Num::Int(3)),
            Datum::Int(-1)
        );
        assert_eq!(arith(ArithOp::Mod, Num::Int(7), Num::Int(0)), Datum::Null);
        assert_eq!(
            arith(ArithOp::Add, Num::Int(i64::MAX), Num::Int(1)),
            Datum::UInt(i64::MAX as u64 + 1)
        );
        assert_eq!(
            out(arith(ArithOp::Mod, Num::Dec(dec("7.5"), 1), Num::Int(2))),
            "1.5"
        );
        assert_eq!(
            out(arith(ArithOp::Mul, Num::Dec(dec("1.5"), 1), Num::Int(2))),
            "3.0"
        );
        assert_eq!(
            arith(ArithOp::Add, Num::Float(0.5), Num::Int(1)),
            Datum::Float(1.5)
        );
    }

    #[test]
    fn like_matches_case_insensitively_with_escapes() {
        assert!(like("Paid", "pa%", '\\'));
        assert!(like("paid", "p_id", '\\'));
        assert!(!like("paid", "p_d", '\\'));
        assert!(like("50%", "50!%", '!'));
        assert!(!like("500", "50!%", '!'));
        assert!(like("abcabc", "%bc%c", '\\'));
        assert!(like("", "%", '\\'));
        assert!(!like("a", "", '\\'));
    }

    #[test]
    fn casts_convert_like_mysql() {
        assert_eq!(
            cast(Datum::Dec(dec("1.5"), 1), CastTo::Signed),
            Datum::Int(2)
        );
        assert_eq!(
            cast(Datum::Str("12.9x".into()), CastTo::Signed),
            Datum::Int(12)
        );
        assert_eq!(
            cast(Datum::Int(-1), CastTo::Unsigned),
            Datum::UInt(u64::MAX)
        );
        assert_eq!(
            cast(Datum::Str("12.345".into()), CastTo::Decimal(10, 2)).to_value(),
            Value::D(dec("12.35"))
        );
        assert_eq!(
            cast(Datum::Int(123456), CastTo::Decimal(5, 2)).to_value(),
            Value::D(dec("999.99"))
        );
        assert_eq!(
            cast(Datum::Str("2026-11-21 10:00:00".into()), CastTo::Date)
                .to_value()
                .to_string(),
            "2026-11-21"
        );
        assert_eq!(cast(Datum::Str("nope".into()), CastTo::Date), Datum::Null);
        assert_eq!(
            cast(Datum::Dec(dec("3.10"), 2), CastTo::Char(None)),
            Datum::Str("3.10".into())
        );
    }
}

#[cfg(test)]
mod robustness {
    //! Data never makes evaluation fail or panic.

    use super::*;
    use crate::functions::{call, Func, IntervalUnit};
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    fn datum() -> impl Strategy<Value = Datum> {
        prop_oneof![
            Just(Datum::Null),
            any::<i64>().prop_map(Datum::Int),
            any::<u64>().prop_map(Datum::UInt),
            (any::<i64>(), 0u32..29).prop_map(|(m, s)| Datum::Dec(Decimal::new(m, s), s)),
            any::<f64>().prop_map(Datum::Float),
            ".{0,24}".prop_map(Datum::Str),
            "[0-9 :./T-]{0,24}".prop_map(Datum::Str),
            proptest::collection::vec(any::<u8>(), 0..8).prop_map(Datum::Bytes),
            (-300_000i32..3_000_000).prop_map(|d| {
                Datum::Date(chrono::NaiveDate::from_num_days_from_ce_opt(d).unwrap_or_default())
            }),
            (any::<u32>(), 0u32..86_400).prop_map(|(n, s)| Datum::Time(
                NaiveTime::from_num_seconds_from_midnight_opt(s, n % 1_000_000_000)
                    .unwrap_or_default()
            )),
        ]
    }

    const FUNCS: [Func; 33] = [
        Func::If,
        Func::IfNull,
        Func::Coalesce,
        Func::NullIf,
        Func::Greatest,
        Func::Least,
        Func::Abs,
        Func::Round,
        Func::Truncate,
        Func::Floor,
        Func::Ceil,
        Func::Sign,
        Func::Mod,
        Func::Concat,
        Func::Lower,
        Func::Upper,
        Func::Date,
        Func::Time,
        Func::Year,
        Func::Month,
        Func::Day,
        Func::Hour,
        Func::Minute,
        Func::Second,
        Func::Weekday,
        Func::DayOfWeek,
        Func::DayOfYear,
        Func::Quarter,
        Func::DateFormat,
        Func::DateAdd(IntervalUnit::Second),
        Func::DateAdd(IntervalUnit::Month),
        Func::DateSub(IntervalUnit::Year),
        Func::DateSub(IntervalUnit::Week),
    ];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_value_through_any_operation(a in datum(), b in datum(), c in datum(), f in 0usize..FUNCS.len()) {
            let func = FUNCS[f];
            let (min, _) = func.arity();
            let args: Vec<Datum> = [a.clone(), b.clone(), c.clone()].into_iter().take(min.max(1)).collect();
            let _ = call(func, args).to_value();
            let _ = call(Func::DateFormat, vec![a.clone(), Datum::Str("%a%b%c%D%d%e%f%H%h%I%i%j%k%l%M%m%p%r%S%s%T%U%v%W%w%x%Y%y%%".into())]);
            for op in [ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div, ArithOp::IntDiv, ArithOp::Mod] {
                if let (Some(x), Some(y)) = (a.to_num(), b.to_num()) {
                    let _ = arith(op, x, y).to_value();
                }
            }
            for to in [CastTo::Signed, CastTo::Unsigned, CastTo::Decimal(10, 2), CastTo::Decimal(65, 28), CastTo::Double, CastTo::Char(Some(3)), CastTo::Date, CastTo::DateTime, CastTo::Time] {
                let _ = cast(a.clone(), to).to_value();
            }
            let _ = crate::datum::sql_cmp(&a, &b);
            let _ = a.truth();
            if let (Some(v), Some(p)) = (a.to_text(), b.to_text()) {
                let _ = like(&v, &p, '\\');
            }
        }
    }
}
