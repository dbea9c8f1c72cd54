//! Rolled-up dimensions: how a report with joins keeps the cost of a change
//! to a shared dimension row (a merchant's city, a product's category) in
//! proportion to the groups it moves rather than to the fact rows behind it.
//!
//! Without a roll-up, a change of a joined row re-joins every fact row it
//! takes part in: a merchant moving city re-joins all of the merchant's
//! orders, so the cost grows with the merchant's history. A relation `d`
//! qualifies for a roll-up when the report reads it only to label or select
//! groups:
//!
//! - `d` is a leaf of the join tree (no other relation joins through it) and
//!   its table appears once in the report;
//! - every GROUP BY expression reads either only `d` or no column of `d`;
//! - every top-level `AND` term of WHERE reads either only `d` or no column
//!   of `d`;
//! - no aggregate argument reads `d`, and no column is left to be resolved
//!   at run time (an unqualified column of a report with joins that the
//!   report does not tie to one table).
//!
//! The engine then also keeps, per (values of the fact side of `d`'s `ON`
//! equalities, values of the GROUP BY expressions not reading `d`), the
//! aggregate state of the joined rows without `d` that pass the WHERE terms
//! not reading `d`: a **sub-aggregate**. A report group is the sum of the
//! sub-aggregates whose `d` rows label it, so a change of a `d` row moves
//! the sub-aggregates of its join key from the groups its old image labels
//! to those its new image labels. Accumulators add and subtract (they are
//! multisets and exact sums), which is what makes moving a whole
//! sub-aggregate equal to moving its rows one by one.
//!
//! When several relations qualify, the engine rolls up one: preferably one
//! without WHERE terms (a pure labelling dimension such as `merchants` for
//! `city` or `products` for `category`, whose rows each stand for many fact
//! rows), else the last joined.

use crate::compile::{JoinKind, Plan};
use crate::eval::{ColRef, Expr, LogicOp, LATE_BOUND};
use std::collections::BTreeSet;

/// How one report rolls up one dimension relation.
#[derive(Debug, Clone)]
pub(crate) struct Rollup {
    /// The rolled-up relation (at least 1).
    pub rel: usize,
    /// The store namespace of the sub-aggregates (`{report}/{table}`; report
    /// names never contain `/`).
    pub namespace: String,
    pub kind: JoinKind,
    /// `d`'s ON equalities: a column of `d` = a column of an earlier relation.
    pub on: Vec<(String, ColRef)>,
    /// The equality `d`'s rows are looked up by.
    pub probe: usize,
    /// Indexes in `group_exprs` of the expressions not reading `d`, in order.
    pub base_keys: Vec<usize>,
    /// WHERE terms not reading `d` (all must be true).
    pub base_filter: Vec<Expr>,
    /// WHERE terms reading only `d` (all must be true).
    pub dim_filter: Vec<Expr>,
}

/// The relations an expression reads; `None` when a column is late bound.
fn relations(e: &Expr) -> Option<BTreeSet<usize>> {
    let mut rels = BTreeSet::new();
    let mut late = false;
    e.walk(&mut |n| {
        if let Expr::Col(c) = n {
            if c.rel == LATE_BOUND {
                late = true;
            } else {
                rels.insert(c.rel);
            }
        }
    });
    (!late).then_some(rels)
}

/// The top-level `AND` terms of a condition.
fn conjuncts<'e>(e: &'e Expr, out: &mut Vec<&'e Expr>) {
    match e {
        Expr::Logic(LogicOp::And, a, b) => {
            conjuncts(a, out);
            conjuncts(b, out);
        }
        other => out.push(other),
    }
}

/// Whether `rels` is `{d}` (true), has no `d` (false), or mixes (None).
fn side(rels: &BTreeSet<usize>, d: usize) -> Option<bool> {
    match (rels.contains(&d), rels.len()) {
        (false, _) => Some(false),
        (true, 1) => Some(true),
        (true, _) => None,
    }
}

/// The roll-up of one relation of `plan`, if it qualifies.
fn qualify(report: &str, plan: &Plan, d: usize) -> Option<Rollup> {
    let join = plan.joins.iter().find(|j| j.rel == d)?;
    let table = &plan.relations[d].table;
    if plan.relations.iter().filter(|r| r.table == *table).count() != 1 {
        return None;
    }
    // A leaf: no ON equality of any join refers to `d`'s columns.
    let leaf = plan
        .joins
        .iter()
        .all(|j| j.on.iter().all(|(_, other)| other.rel != d));
    if !leaf || join.on.iter().any(|(_, other)| other.rel == LATE_BOUND) {
        return None;
    }
    for spec in &plan.aggs {
        if let Some(arg) = &spec.arg {
            if relations(arg)?.contains(&d) {
                return None;
            }
        }
    }
    let mut base_keys = Vec::new();
    for (i, g) in plan.group_exprs.iter().enumerate() {
        if !side(&relations(g)?, d)? {
            base_keys.push(i);
        }
    }
    let mut base_filter = Vec::new();
    let mut dim_filter = Vec::new();
    if let Some(f) = &plan.filter {
        let mut terms = Vec::new();
        conjuncts(f, &mut terms);
        for t in terms {
            if side(&relations(t)?, d)? {
                dim_filter.push(t.clone());
            } else {
                base_filter.push(t.clone());
            }
        }
    }
    Some(Rollup {
        rel: d,
        namespace: format!("{report}/{table}"),
        kind: join.kind,
        on: join.on.clone(),
        probe: join.probe,
        base_keys,
        base_filter,
        dim_filter,
    })
}

/// The relation `plan` rolls up, if any (see the module documentation).
pub(crate) fn choose(report: &str, plan: &Plan) -> Option<Rollup> {
    (1..plan.relations.len())
        .filter_map(|d| qualify(report, plan, d))
        .min_by_key(|r| (!r.dim_filter.is_empty(), std::cmp::Reverse(r.rel)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Report;
    use crate::tenant::TenantColumns;

    fn rollup(sql: &str) -> Option<(String, Vec<usize>, usize, usize)> {
        let mut tenants = TenantColumns::default();
        tenants.per_table.insert("merchants".into(), "id".into());
        let report = Report::parse("r", "r.sql", sql, &tenants).unwrap_or_else(|e| panic!("{e}"));
        choose("r", &report.plan).map(|r| {
            (
                r.namespace,
                r.base_keys,
                r.base_filter.len(),
                r.dim_filter.len(),
            )
        })
    }

    #[test]
    fn a_labelling_dimension_is_rolled_up() {
        let got = rollup(
            "SELECT o.merchant_id, m.city, DATE(o.created_at) AS day, COUNT(*) AS n,
                    MAX(o.amount) AS top, COUNT(DISTINCT o.customer_id) AS customers
             FROM orders o JOIN merchants m ON m.id = o.merchant_id
             WHERE o.status <> 'cart'
             GROUP BY o.merchant_id, m.city, DATE(o.created_at)",
        );
        assert_eq!(got, Some(("r/merchants".into(), vec![0, 2], 1, 0)));
    }

    #[test]
    fn the_labelling_dimension_is_preferred_over_one_with_where_terms() {
        let got = rollup(
            "SELECT i.merchant_id, DATE(o.created_at) AS day, p.category, SUM(i.qty) AS units
             FROM order_items i
             JOIN orders o ON o.id = i.order_id
             JOIN products p ON p.id = i.product_id
             WHERE o.status IN ('paid', 'shipped')
             GROUP BY i.merchant_id, DATE(o.created_at), p.category",
        );
        assert_eq!(got, Some(("r/products".into(), vec![0, 1], 1, 0)));
    }

    #[test]
    fn relations_read_by_aggregates_or_joined_through_are_not_rolled_up() {
        // `p` is read by an aggregate; `o` is joined through by `m`, and `m`
        // is mixed with `o` in one WHERE term.
        let got = rollup(
            "SELECT i.merchant_id, m.city, SUM(i.qty * p.price) AS value
             FROM order_items i
             JOIN orders o ON o.id = i.order_id
             JOIN products p ON p.id = i.product_id
             JOIN merchants m ON m.id = o.merchant_id
             WHERE m.created_at < o.created_at
             GROUP BY i.merchant_id, m.city",
        );
        assert_eq!(got, None);
        // A WHERE term reading only `m` is fine, and so is an OR inside it.
        let got = rollup(
            "SELECT o.merchant_id, m.city, COUNT(*) AS n
             FROM orders o LEFT JOIN merchants m ON m.id = o.merchant_id
             WHERE (m.city IS NULL OR m.city <> 'Nice') AND o.status <> 'cart'
             GROUP BY o.merchant_id, m.city",
        );
        assert_eq!(got, Some(("r/merchants".into(), vec![0], 1, 1)));
    }
}
