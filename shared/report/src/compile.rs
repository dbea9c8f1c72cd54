//! Report SQL → validated plan: parsing (sqlparser, MySQL dialect), checks
//! against the supported class, name resolution and expression compilation.
//!
//! Every rejection names the file, the line:column of the construct and what
//! is not supported.

use crate::agg::{AggKind, AggSpec};
use crate::datum::{parse_datetime, parse_time, Datum};
use crate::error::DefinitionError;
use crate::eval::{ArithOp, CastTo, CmpOp, ColRef, Expr, Loc, LogicOp, LATE_BOUND};
use crate::functions::{parse_utc_offset, unsupported_specifier, Func, IntervalUnit, TrimSide};
use crate::report::{ColumnDef, ColumnRole};
use crate::tenant::TenantColumns;
use rust_decimal::Decimal;
use sqlparser::ast::{
    self, BinaryOperator, CeilFloorKind, DataType, DateTimeField, Distinct, DuplicateTreatment,
    ExactNumberInfo, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, JoinConstraint,
    JoinOperator, SelectItem, SetExpr, Spanned, Statement, TableFactor, UnaryOperator,
};
use sqlparser::dialect::MySqlDialect;
use sqlparser::parser::{Parser, ParserError};
use sqlparser::tokenizer::{Span, Token, TokenWithSpan, Tokenizer};
use std::collections::BTreeSet;

/// A table the query reads, as named in FROM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub schema: Option<String>,
    pub table: String,
    pub alias: Option<String>,
}

impl Relation {
    /// The name the query uses for the relation: its alias, else the table.
    pub fn label(&self) -> &str {
        self.alias.as_deref().unwrap_or(&self.table)
    }
}

/// How a joined table is joined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JoinKind {
    /// `[INNER] JOIN`: rows without a match are dropped.
    Inner,
    /// `LEFT [OUTER] JOIN`: rows without a match are kept, NULL-extended.
    Left,
}

/// One `JOIN table ON …` of a report.
#[derive(Debug, Clone)]
pub(crate) struct JoinSpec {
    /// Index of the joined relation in `Plan::relations` (at least 1).
    pub rel: usize,
    pub kind: JoinKind,
    /// The ON equalities: a column of `rel` (lower-case) = a column of a
    /// relation joined before it.
    pub on: Vec<(String, ColRef)>,
    /// The equality that finds matching rows (through an index on `rel`'s
    /// column) and, backwards, the rows of the earlier relation that a row
    /// of `rel` joins (through an index on the earlier column).
    pub probe: usize,
}

/// What the engine executes for one report.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Relation 0 is the fact table; the others are joined in order.
    pub relations: Vec<Relation>,
    /// The joins of relations 1.. (empty for a one-table report).
    pub joins: Vec<JoinSpec>,
    /// WHERE, over the row context.
    pub filter: Option<Expr>,
    /// GROUP BY expressions, over the row context.
    pub group_exprs: Vec<Expr>,
    /// Distinct aggregate calls; arguments over the row context.
    pub aggs: Vec<AggSpec>,
    /// Select items over `Key`/`Agg` (and constants).
    pub outputs: Vec<Expr>,
    /// HAVING over `Key`/`Agg`.
    pub having: Option<Expr>,
    /// Index in `group_exprs` of the tenant column (None: the report is not
    /// keyed by merchant).
    pub tenant_key: Option<usize>,
    /// Index in `group_exprs` of the date key.
    pub date_key: Option<usize>,
}

pub(crate) struct Compiled {
    pub columns: Vec<ColumnDef>,
    pub fact_table: String,
    pub tenant_column: Option<usize>,
    pub date_column: Option<usize>,
    pub plan: Plan,
}

/// Functions whose result is not a function of the row.
const NON_DETERMINISTIC: &[&str] = &[
    "NOW",
    "CURRENT_TIMESTAMP",
    "LOCALTIME",
    "LOCALTIMESTAMP",
    "SYSDATE",
    "CURDATE",
    "CURRENT_DATE",
    "CURTIME",
    "CURRENT_TIME",
    "UTC_DATE",
    "UTC_TIME",
    "UTC_TIMESTAMP",
    "UNIX_TIMESTAMP",
    "RAND",
    "RANDOM",
    "UUID",
    "UUID_SHORT",
    "SYS_GUID",
    "CONNECTION_ID",
    "USER",
    "CURRENT_USER",
    "SESSION_USER",
    "SYSTEM_USER",
    "DATABASE",
    "SCHEMA",
    "LAST_INSERT_ID",
    "ROW_COUNT",
    "FOUND_ROWS",
    "VERSION",
    "SLEEP",
    "BENCHMARK",
    "GET_LOCK",
    "RELEASE_LOCK",
    "NEXTVAL",
    "LASTVAL",
];

/// Aggregates MySQL has that reports do not support.
const UNSUPPORTED_AGGREGATES: &[&str] = &[
    "GROUP_CONCAT",
    "STD",
    "STDDEV",
    "STDDEV_POP",
    "STDDEV_SAMP",
    "VARIANCE",
    "VAR_POP",
    "VAR_SAMP",
    "BIT_AND",
    "BIT_OR",
    "BIT_XOR",
    "JSON_ARRAYAGG",
    "JSON_OBJECTAGG",
    "ANY_VALUE",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Where,
    GroupBy,
    Select,
    Having,
    AggArg,
}

impl Mode {
    fn allows_aggregates(self) -> bool {
        matches!(self, Mode::Select | Mode::Having)
    }

    fn place(self) -> &'static str {
        match self {
            Mode::Where => "in WHERE",
            Mode::GroupBy => "in GROUP BY",
            Mode::Select => "in the select list",
            Mode::Having => "in HAVING",
            Mode::AggArg => "inside another aggregate",
        }
    }
}

struct Compiler<'a> {
    file: &'a str,
    sql: &'a str,
    tokens: Vec<TokenWithSpan>,
    relations: Vec<Relation>,
    joins: Vec<JoinSpec>,
    /// Per relation, the columns the report shows it has (reports with joins).
    known: Vec<BTreeSet<String>>,
    aggs: Vec<AggSpec>,
    /// Select aliases (lower-case) and their compiled output expressions,
    /// visible in HAVING.
    aliases: Vec<(String, Expr)>,
    /// Select aliases that rename something else than the column of the
    /// same name (WHERE cannot use them).
    renaming_aliases: Vec<String>,
}

type Res<T> = Result<T, DefinitionError>;

/// Parses and validates one report definition.
pub(crate) fn compile(file: &str, sql: &str, tenants: &TenantColumns) -> Res<Compiled> {
    let tokens = Tokenizer::new(&MySqlDialect {}, sql)
        .tokenize_with_location()
        .unwrap_or_default();
    let mut cx = Compiler {
        file,
        sql,
        tokens,
        relations: Vec::new(),
        joins: Vec::new(),
        known: Vec::new(),
        aggs: Vec::new(),
        aliases: Vec::new(),
        renaming_aliases: Vec::new(),
    };
    let statements = match Parser::parse_sql(&MySqlDialect {}, sql) {
        Ok(s) => s,
        Err(e) => return Err(cx.syntax_error(e)),
    };
    let statement = match statements.as_slice() {
        [] => {
            return Err(cx.err(
                Loc { line: 1, column: 1 },
                "the file holds no SQL statement",
            ))
        }
        [one] => one,
        [_, second, ..] => {
            return Err(cx.err(
                cx.loc_of(second.span()),
                format!(
                    "a report is one SELECT statement; found {} statements",
                    statements.len()
                ),
            ))
        }
    };
    let Statement::Query(query) = statement else {
        let first = sql.split_whitespace().next().unwrap_or("").to_uppercase();
        return Err(cx.err(
            cx.loc_of(statement.span()),
            format!("a report is a SELECT statement; found {first}"),
        ));
    };
    cx.compile_query(query, tenants)
}

impl Compiler<'_> {
    fn err(&self, loc: Loc, message: impl Into<String>) -> DefinitionError {
        DefinitionError {
            file: self.file.to_string(),
            line: loc.line,
            column: loc.column,
            message: message.into(),
        }
    }

    fn syntax_error(&self, e: ParserError) -> DefinitionError {
        let text = match e {
            ParserError::TokenizerError(s) | ParserError::ParserError(s) => s,
            ParserError::RecursionLimitExceeded => "expression nested too deeply".to_string(),
        };
        // sqlparser appends " at Line: L, Column: C".
        let (message, loc) = match text.rfind(" at Line: ") {
            Some(i) => {
                let pos = &text[i + " at Line: ".len()..];
                let mut parts = pos.split(", Column: ");
                let line = parts
                    .next()
                    .and_then(|l| l.trim().parse().ok())
                    .unwrap_or(0);
                let column = parts
                    .next()
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                (text[..i].to_string(), Loc { line, column })
            }
            None => (text, Loc::default()),
        };
        self.err(loc, format!("syntax error: {message}"))
    }

    fn loc_of(&self, span: Span) -> Loc {
        if span.start.line == 0 {
            Loc { line: 1, column: 1 }
        } else {
            Loc {
                line: span.start.line,
                column: span.start.column,
            }
        }
    }

    /// The location of the first keyword `kw` (a word, case-insensitive) at
    /// or after `after`; the statement start when absent.
    fn kw_loc(&self, kw: &str, after: Loc) -> Loc {
        let after = (after.line, after.column);
        self.tokens
            .iter()
            .find(|t| {
                matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
                    && (t.span.start.line, t.span.start.column) >= after
            })
            .map(|t| self.loc_of(t.span))
            .unwrap_or(Loc { line: 1, column: 1 })
    }

    /// Location of the last `kw` (unquoted) starting before `before`: the
    /// parser's span of `INTERVAL n unit` starts at `n`.
    fn kw_loc_before(&self, kw: &str, before: Loc) -> Loc {
        let before = (before.line, before.column);
        self.tokens
            .iter()
            .rfind(|t| {
                matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw))
                    && (t.span.start.line, t.span.start.column) < before
            })
            .map(|t| self.loc_of(t.span))
            .unwrap_or(Loc { line: 1, column: 1 })
    }

    /// Source text of a span of tokens (for MySQL's default column names).
    fn text_between(&self, start: &TokenWithSpan, end: &TokenWithSpan) -> String {
        let offset = |line: u64, column: u64| -> Option<usize> {
            let mut pos = 0usize;
            for (i, l) in self.sql.split_inclusive('\n').enumerate() {
                if i as u64 + 1 == line {
                    let col = usize::try_from(column).ok()?.checked_sub(1)?;
                    return Some(pos + l.char_indices().nth(col).map_or(l.len(), |(b, _)| b));
                }
                pos += l.len();
            }
            None
        };
        match (
            offset(start.span.start.line, start.span.start.column),
            offset(end.span.end.line, end.span.end.column),
        ) {
            (Some(a), Some(b)) if a < b && b <= self.sql.len() => self.sql[a..b].trim().to_string(),
            _ => String::new(),
        }
    }

    /// The source text of each top-level select item (between SELECT and
    /// FROM, split at top-level commas).
    fn select_item_texts(&self) -> Vec<String> {
        let mut texts = Vec::new();
        let Some(start) = self.tokens.iter().position(
            |t| matches!(&t.token, Token::Word(w) if w.value.eq_ignore_ascii_case("SELECT")),
        ) else {
            return texts;
        };
        let mut depth = 0i32;
        let mut item: Vec<&TokenWithSpan> = Vec::new();
        let flush = |item: &mut Vec<&TokenWithSpan>, texts: &mut Vec<String>| {
            if let (Some(a), Some(b)) = (item.first(), item.last()) {
                texts.push(self.text_between(a, b));
            }
            item.clear();
        };
        for t in &self.tokens[start + 1..] {
            match &t.token {
                Token::Whitespace(_) => continue,
                Token::LParen => depth += 1,
                Token::RParen => depth -= 1,
                Token::Comma if depth == 0 => {
                    flush(&mut item, &mut texts);
                    continue;
                }
                Token::Word(w)
                    if depth == 0
                        && w.quote_style.is_none()
                        && w.value.eq_ignore_ascii_case("FROM") =>
                {
                    break;
                }
                _ => {}
            }
            item.push(t);
        }
        flush(&mut item, &mut texts);
        texts
    }

    fn compile_query(&mut self, q: &ast::Query, tenants: &TenantColumns) -> Res<Compiled> {
        let start = Loc { line: 1, column: 1 };
        if q.with.is_some() {
            return Err(self.err(
                self.kw_loc("WITH", start),
                "WITH (common table expressions) is not supported in a report definition",
            ));
        }
        if q.order_by.is_some() {
            return Err(self.err(
                self.kw_loc("ORDER", start),
                "ORDER BY is not allowed in a report definition: report rows are identified by their key; sort when querying",
            ));
        }
        if q.limit_clause.is_some() || q.fetch.is_some() {
            return Err(self.err(
                self.kw_loc("LIMIT", start),
                "LIMIT is not allowed in a report definition: a report holds every group; page when querying",
            ));
        }
        if !q.locks.is_empty() || q.for_clause.is_some() {
            return Err(self.err(
                self.kw_loc("FOR", start),
                "locking clauses (FOR UPDATE/SHARE) are not allowed in a report definition",
            ));
        }
        if q.settings.is_some() || q.format_clause.is_some() || !q.pipe_operators.is_empty() {
            return Err(self.err(
                start,
                "this query form is not supported in a report definition",
            ));
        }
        let select = match q.body.as_ref() {
            SetExpr::Select(s) => s,
            SetExpr::SetOperation { op, .. } => {
                let word = op.to_string().to_uppercase();
                return Err(self.err(
                    self.kw_loc(&word, start),
                    format!(
                        "{word} is not supported in a report definition: a report is one SELECT"
                    ),
                ));
            }
            SetExpr::Query(_) => {
                return Err(self.err(
                    start,
                    "a parenthesized query is not supported as a report definition",
                ))
            }
            other => {
                return Err(self.err(
                    self.loc_of(other.span()),
                    "a report is a SELECT … FROM … GROUP BY … statement",
                ))
            }
        };
        self.compile_select(select, tenants)
    }

    fn check_select_clauses(&self, s: &ast::Select) -> Res<()> {
        let start = Loc { line: 1, column: 1 };
        match &s.distinct {
            None | Some(Distinct::All) => {}
            Some(_) => {
                return Err(self.err(
                    self.kw_loc("DISTINCT", start),
                    "SELECT DISTINCT is not supported: GROUP BY the columns instead",
                ))
            }
        }
        let unsupported = |what: &str, kw: &str| {
            Err(self.err(
                self.kw_loc(kw, start),
                format!("{what} is not supported in a report definition"),
            ))
        };
        if s.top.is_some() {
            return unsupported("TOP", "TOP");
        }
        if s.into.is_some() {
            return unsupported("SELECT … INTO", "INTO");
        }
        if !s.lateral_views.is_empty() {
            return unsupported("LATERAL VIEW", "LATERAL");
        }
        if s.prewhere.is_some() {
            return unsupported("PREWHERE", "PREWHERE");
        }
        if !s.connect_by.is_empty() {
            return unsupported("CONNECT BY", "CONNECT");
        }
        if !s.cluster_by.is_empty() || !s.distribute_by.is_empty() || !s.sort_by.is_empty() {
            return unsupported("CLUSTER/DISTRIBUTE/SORT BY", "BY");
        }
        if !s.named_window.is_empty() {
            return unsupported("WINDOW", "WINDOW");
        }
        if s.qualify.is_some() {
            return unsupported("QUALIFY", "QUALIFY");
        }
        if s.value_table_mode.is_some() || s.exclude.is_some() {
            return unsupported("this SELECT form", "SELECT");
        }
        if !matches!(s.flavor, ast::SelectFlavor::Standard) {
            return unsupported("FROM-first SELECT", "FROM");
        }
        Ok(())
    }

    fn compile_from(&mut self, s: &ast::Select, tenants: &TenantColumns) -> Res<()> {
        let start = Loc { line: 1, column: 1 };
        let Some(first) = s.from.first() else {
            return Err(self.err(start, "a report needs FROM <table>"));
        };
        if let Some(second) = s.from.get(1) {
            return Err(self.err(
                self.loc_of(second.relation.span()),
                "joining tables with a comma is not supported: write JOIN … ON …",
            ));
        }
        let fact = self.relation(&first.relation, tenants)?;
        self.relations.push(fact);
        let mut pending: Vec<(usize, JoinKind, &ast::Expr)> = Vec::new();
        for join in &first.joins {
            let rel_loc = self.loc_of(join.relation.span());
            let kw = self.join_kw_loc(rel_loc);
            let (kind, constraint) = match &join.join_operator {
                JoinOperator::Join(c) | JoinOperator::Inner(c) | JoinOperator::StraightJoin(c) => {
                    (JoinKind::Inner, c)
                }
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) => (JoinKind::Left, c),
                JoinOperator::Right(_) | JoinOperator::RightOuter(_) => {
                    return Err(self.err(
                        kw,
                        "RIGHT JOIN is not supported: put the table whose rows the report counts first in FROM and LEFT JOIN the others",
                    ))
                }
                JoinOperator::FullOuter(_) => {
                    return Err(self.err(
                        kw,
                        "FULL OUTER JOIN is not supported in a report definition",
                    ))
                }
                JoinOperator::CrossJoin(_) => {
                    return Err(self.err(
                        kw,
                        "CROSS JOIN is not supported: join with ON conditions comparing columns (ON a.x = b.y)",
                    ))
                }
                _ => {
                    return Err(self.err(
                        kw,
                        "this kind of join is not supported in a report definition: use [INNER] JOIN or LEFT [OUTER] JOIN",
                    ))
                }
            };
            let on = match constraint {
                JoinConstraint::On(e) => e,
                JoinConstraint::Using(_) => {
                    return Err(self.err(
                        kw,
                        "JOIN … USING is not supported: write ON with the columns of both tables (ON a.x = b.x)",
                    ))
                }
                JoinConstraint::Natural => {
                    return Err(self.err(
                        kw,
                        "NATURAL JOIN is not supported: write ON with the columns of both tables (ON a.x = b.x)",
                    ))
                }
                JoinConstraint::None => {
                    return Err(self.err(
                        kw,
                        "a JOIN needs ON: equalities between the joined table's columns and columns of the tables before it (ON a.x = b.y)",
                    ))
                }
            };
            let rel = self.relation(&join.relation, tenants)?;
            if self.relations.iter().any(|r| r.table == rel.table) {
                return Err(self.err(
                    rel_loc,
                    format!(
                        "table `{}` appears twice in FROM: a report reads each table once",
                        rel.table
                    ),
                ));
            }
            if self
                .relations
                .iter()
                .any(|r| r.label().eq_ignore_ascii_case(rel.label()))
            {
                return Err(self.err(
                    rel_loc,
                    format!(
                        "`{}` names two tables in FROM: give them distinct aliases",
                        rel.label()
                    ),
                ));
            }
            self.relations.push(rel);
            pending.push((self.relations.len() - 1, kind, on));
        }
        if self.relations.len() > 1 {
            self.collect_known_columns(tenants);
        }
        for (rel, kind, on) in pending {
            let spec = self.join_spec(rel, kind, on, tenants)?;
            self.joins.push(spec);
        }
        Ok(())
    }

    /// One table of FROM.
    fn relation(&self, factor: &TableFactor, tenants: &TenantColumns) -> Res<Relation> {
        match factor {
            TableFactor::Table {
                name,
                alias,
                args,
                with_hints,
                version,
                partitions,
                sample,
                ..
            } => {
                if args.is_some()
                    || !with_hints.is_empty()
                    || version.is_some()
                    || !partitions.is_empty()
                    || sample.is_some()
                {
                    return Err(self.err(
                        self.loc_of(factor.span()),
                        format!(
                            "table options on `{name}` are not supported in a report definition"
                        ),
                    ));
                }
                let parts: Vec<String> = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident().map(|i| i.value.clone()))
                    .collect();
                let (schema, table) = match parts.as_slice() {
                    [t] => (None, t.clone()),
                    [s, t] => (Some(s.clone()), t.clone()),
                    _ => {
                        return Err(self.err(
                            self.loc_of(factor.span()),
                            format!(
                                "table name `{name}` is not supported: use table or schema.table"
                            ),
                        ))
                    }
                };
                if let Some(a) = alias {
                    if !a.columns.is_empty() {
                        return Err(self.err(
                            self.loc_of(a.name.span),
                            "column aliases on a table are not supported",
                        ));
                    }
                }
                if !tenants.captures(&table) {
                    return Err(self.err(
                        self.loc_of(factor.span()),
                        format!(
                            "table `{table}` is not captured: a report reads captured tables only (add it to [source] tables)"
                        ),
                    ));
                }
                Ok(Relation {
                    schema,
                    table,
                    alias: alias.as_ref().map(|a| a.name.value.clone()),
                })
            }
            TableFactor::Derived { .. } => Err(self.err(
                self.loc_of(factor.span()),
                "subqueries are not supported in a report definition",
            )),
            other => Err(self.err(
                self.loc_of(other.span()),
                "only a plain table is supported in FROM",
            )),
        }
    }

    /// The location of the join operator before the table at `rel_loc`:
    /// its first word (`LEFT` in `LEFT OUTER JOIN`).
    fn join_kw_loc(&self, rel_loc: Loc) -> Loc {
        let before = |t: &TokenWithSpan| {
            (t.span.start.line, t.span.start.column) < (rel_loc.line, rel_loc.column)
        };
        let is_word = |t: &TokenWithSpan, words: &[&str]| matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && words.iter().any(|k| w.value.eq_ignore_ascii_case(k)));
        let Some(mut i) = self
            .tokens
            .iter()
            .rposition(|t| before(t) && is_word(t, &["JOIN", "STRAIGHT_JOIN"]))
        else {
            return rel_loc;
        };
        let mut j = i;
        while j > 0 {
            j -= 1;
            let t = &self.tokens[j];
            if matches!(t.token, Token::Whitespace(_)) {
                continue;
            }
            if is_word(
                t,
                &[
                    "LEFT", "RIGHT", "FULL", "OUTER", "INNER", "CROSS", "NATURAL",
                ],
            ) {
                i = j;
                continue;
            }
            break;
        }
        self.loc_of(self.tokens[i].span)
    }

    /// The relation a qualifier (`o`, `orders`, `shop.orders`) names.
    fn find_relation(&self, schema: Option<&str>, q: &str) -> Option<usize> {
        self.relations.iter().position(|r| {
            let name_ok = match &r.alias {
                Some(a) => schema.is_none() && a.eq_ignore_ascii_case(q),
                None => r.table == q,
            };
            let schema_ok = match (schema, &r.schema) {
                (None, _) => true,
                (Some(s), Some(rs)) => s == rs,
                (Some(_), None) => true,
            };
            name_ok && schema_ok
        })
    }

    /// What the report tells about each relation's columns: its tenant
    /// column (every captured table has one) and every column the report
    /// names qualified with it anywhere (`o.status`). Unqualified names are
    /// resolved against these sets.
    fn collect_known_columns(&mut self, tenants: &TenantColumns) {
        let mut known: Vec<BTreeSet<String>> = self
            .relations
            .iter()
            .map(|r| BTreeSet::from([tenants.of(&r.table).to_lowercase()]))
            .collect();
        let words: Vec<&Token> = self
            .tokens
            .iter()
            .map(|t| &t.token)
            .filter(|t| !matches!(t, Token::Whitespace(_)))
            .collect();
        let word = |i: usize| match words.get(i) {
            Some(Token::Word(w)) => Some(w.value.as_str()),
            _ => None,
        };
        let period = |i: usize| matches!(words.get(i), Some(Token::Period));
        let mut i = 0;
        while i < words.len() {
            let starts_chain = i == 0 || !period(i - 1);
            if let (true, Some(a), true, Some(b)) =
                (starts_chain, word(i), period(i + 1), word(i + 2))
            {
                let (schema, q, c, next) = match (period(i + 3), word(i + 4)) {
                    (true, Some(c)) => (Some(a), b, c, i + 5),
                    _ => (None, a, b, i + 3),
                };
                if let Some(r) = self.find_relation(schema, q) {
                    known[r].insert(c.to_lowercase());
                }
                i = next;
                continue;
            }
            i += 1;
        }
        self.known = known;
    }

    /// The relation an unqualified column belongs to: the only relation
    /// known to have it, or [`LATE_BOUND`] when no relation is known to.
    fn resolve_unqualified(&self, name: &ast::Ident, loc: Loc) -> Res<usize> {
        if self.relations.len() <= 1 {
            return Ok(0);
        }
        let lc = name.value.to_lowercase();
        let holders: Vec<usize> = (0..self.relations.len())
            .filter(|&r| self.known.get(r).is_some_and(|k| k.contains(&lc)))
            .collect();
        match holders.as_slice() {
            [] => Ok(LATE_BOUND),
            [one] => Ok(*one),
            many => {
                let labels: Vec<String> = many
                    .iter()
                    .map(|&r| format!("`{}`", self.relations[r].label()))
                    .collect();
                let (init, last) = labels.split_at(labels.len() - 1);
                let all = if many.len() == 2 { "both" } else { "all" };
                Err(self.err(
                    loc,
                    format!(
                        "column `{}` is ambiguous: {} and {} {all} have it; qualify it (`{}.{}`)",
                        name.value,
                        init.join(", "),
                        last.join(""),
                        self.relations[many[0]].label(),
                        name.value
                    ),
                ))
            }
        }
    }

    /// Compiles `ON a.x = b.y [AND …]` of the join of relation `rel`.
    fn join_spec(
        &mut self,
        rel: usize,
        kind: JoinKind,
        on: &ast::Expr,
        tenants: &TenantColumns,
    ) -> Res<JoinSpec> {
        let mut conjuncts = Vec::new();
        flatten_and(on, &mut conjuncts);
        let label = self.relations[rel].label().to_string();
        let mut eqs: Vec<(String, ColRef)> = Vec::new();
        for c in conjuncts {
            let not_equality = || {
                self.err(
                    self.loc_of(c.span()),
                    format!(
                        "ON conditions must be equalities between columns joined with AND (ON {label}.x = t.y AND …); found `{c}`"
                    ),
                )
            };
            let ast::Expr::BinaryOp {
                left,
                op: BinaryOperator::Eq,
                right,
            } = c
            else {
                return Err(not_equality());
            };
            let side = |e: &ast::Expr| -> Res<Option<ColRef>> {
                let mut e = e;
                while let ast::Expr::Nested(inner) = e {
                    e = inner;
                }
                let col = match e {
                    ast::Expr::Identifier(id) => self.column(std::slice::from_ref(id), id.span)?,
                    ast::Expr::CompoundIdentifier(parts) => self.column(parts, e.span())?,
                    _ => return Ok(None),
                };
                match col {
                    Expr::Col(c) => Ok(Some(c)),
                    _ => Ok(None),
                }
            };
            let (Some(a), Some(b)) = (side(left)?, side(right)?) else {
                return Err(not_equality());
            };
            for col in [&a, &b] {
                if col.rel == LATE_BOUND {
                    return Err(self.err(
                        col.loc,
                        format!(
                            "qualify `{}` in ON with its table or alias (t.{})",
                            col.written, col.written
                        ),
                    ));
                }
                if col.rel > rel {
                    return Err(self.err(
                        col.loc,
                        format!(
                            "the ON of `{label}` can use only `{label}` and the tables joined before it; `{}` comes later",
                            self.relations[col.rel].label()
                        ),
                    ));
                }
            }
            let (mine, other) = match (a.rel == rel, b.rel == rel) {
                (true, false) => (a, b),
                (false, true) => (b, a),
                _ => {
                    return Err(self.err(
                        self.loc_of(c.span()),
                        format!(
                            "each ON equality must compare a column of `{label}` with a column of a table joined before it; found `{c}`"
                        ),
                    ))
                }
            };
            eqs.push((mine.name, other));
        }
        // Find rows through the most selective equality: tenant columns
        // match every row of a merchant.
        let tenant_of = |r: usize| tenants.of(&self.relations[r].table).to_lowercase();
        let probe = eqs
            .iter()
            .position(|(mine, other)| *mine != tenant_of(rel) && other.name != tenant_of(other.rel))
            .unwrap_or(0);
        Ok(JoinSpec {
            rel,
            kind,
            on: eqs,
            probe,
        })
    }

    fn compile_select(&mut self, s: &ast::Select, tenants: &TenantColumns) -> Res<Compiled> {
        let start = Loc { line: 1, column: 1 };
        self.check_select_clauses(s)?;
        self.compile_from(s, tenants)?;

        // Select items: expression, alias, span.
        let mut items: Vec<(&ast::Expr, Option<&ast::Ident>)> = Vec::new();
        for item in &s.projection {
            match item {
                SelectItem::UnnamedExpr(e) => items.push((e, None)),
                SelectItem::ExprWithAlias { expr, alias } => items.push((expr, Some(alias))),
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => {
                    return Err(self.err(
                        self.loc_of(item.span()),
                        "SELECT * is not supported: list the report's columns",
                    ))
                }
                SelectItem::ExprWithAliases { .. } => {
                    return Err(self.err(
                        self.loc_of(item.span()),
                        "multiple aliases are not supported",
                    ))
                }
            }
        }

        // GROUP BY.
        let group_ast: &[ast::Expr] = match &s.group_by {
            GroupByExpr::Expressions(exprs, modifiers) => {
                if !modifiers.is_empty() {
                    return Err(self.err(
                        self.kw_loc("WITH", start),
                        "GROUP BY modifiers (WITH ROLLUP, …) are not supported in a report definition",
                    ));
                }
                exprs
            }
            GroupByExpr::All(_) => {
                return Err(self.err(self.kw_loc("GROUP", start), "GROUP BY ALL is not supported"))
            }
        };
        if group_ast.is_empty() {
            return Err(self.err(
                s.from
                    .first()
                    .map_or(start, |f| self.loc_of(f.relation.span())),
                "a report needs GROUP BY: its GROUP BY expressions are the key of its rows",
            ));
        }
        let mut group_exprs = Vec::with_capacity(group_ast.len());
        for g in group_ast {
            let e = self.compile_group_by(g, &items)?;
            group_exprs.push(e);
        }

        // Select items → outputs.
        let texts = self.select_item_texts();
        let mut outputs = Vec::with_capacity(items.len());
        let mut columns: Vec<ColumnDef> = Vec::with_capacity(items.len());
        for (i, (expr, alias)) in items.iter().enumerate() {
            let compiled = self.expr(expr, Mode::Select)?;
            let bound = self.bind_keys(compiled, &group_exprs)?;
            let name = match alias {
                Some(a) => a.value.clone(),
                None => match expr {
                    ast::Expr::Identifier(id) => id.value.clone(),
                    ast::Expr::CompoundIdentifier(parts) => {
                        parts.last().map(|p| p.value.clone()).unwrap_or_default()
                    }
                    other => texts
                        .get(i)
                        .filter(|t| !t.is_empty() && texts.len() == items.len())
                        .cloned()
                        .unwrap_or_else(|| other.to_string()),
                },
            };
            if let Some(prev) = columns.iter().find(|c| c.name.eq_ignore_ascii_case(&name)) {
                return Err(self.err(
                    self.loc_of(alias.map_or_else(|| expr.span(), |a| a.span)),
                    format!(
                        "duplicate column name `{}`: give the select items distinct aliases",
                        prev.name
                    ),
                ));
            }
            let role = if matches!(bound, Expr::Key(_)) {
                ColumnRole::Key
            } else {
                ColumnRole::Value
            };
            if let Some(a) = alias {
                let lc = a.value.to_lowercase();
                let same_column = match expr {
                    ast::Expr::Identifier(id) => id.value.eq_ignore_ascii_case(&lc),
                    ast::Expr::CompoundIdentifier(p) => p
                        .last()
                        .is_some_and(|id| id.value.eq_ignore_ascii_case(&lc)),
                    _ => false,
                };
                if !same_column {
                    self.renaming_aliases.push(lc.clone());
                }
                self.aliases.push((lc, bound.clone()));
            }
            columns.push(ColumnDef { name, role });
            outputs.push(bound);
        }

        // WHERE and HAVING.
        let filter = match &s.selection {
            Some(w) => Some(self.expr(w, Mode::Where)?),
            None => None,
        };
        let having = match &s.having {
            Some(h) => {
                let e = self.expr(h, Mode::Having)?;
                Some(self.bind_keys(e, &group_exprs)?)
            }
            None => None,
        };

        // Tenant key: the fact table's tenant column, grouped and selected.
        let fact = self.relations[0].table.clone();
        let tenant = tenants.of(&fact).to_lowercase();
        let is_tenant = |e: &Expr| matches!(e, Expr::Col(c) if c.rel == 0 && c.name == tenant);
        // A report that does not GROUP BY the tenant column is not keyed by
        // merchant: its groups span partitions and are merged by result-writer.
        let mut tenant_key = group_exprs.iter().position(is_tenant);
        let joined_tenant_at = |e: &Expr| match e {
            Expr::Col(c) if c.rel != 0 => {
                let r = self.relations.get(c.rel)?;
                let kind = self.joins.iter().find(|j| j.rel == c.rel)?.kind;
                (c.name == tenants.of(&r.table).to_lowercase()).then_some((kind, c.loc))
            }
            _ => None,
        };
        if tenant_key.is_none() {
            // An inner-joined table's tenant column holds the fact row's
            // merchant: joined rows meet in their merchant's partition, so
            // they belong to the same merchant. The report is keyed by the
            // fact table's tenant column.
            let inner = group_exprs
                .iter()
                .position(|e| joined_tenant_at(e).is_some_and(|(k, _)| k == JoinKind::Inner));
            if let Some(i) = inner {
                if let Expr::Col(c) = &group_exprs[i] {
                    let loc = c.loc;
                    group_exprs[i] = Expr::Col(ColRef {
                        rel: 0,
                        name: tenant.clone(),
                        written: tenant.clone(),
                        loc,
                    });
                    tenant_key = Some(i);
                }
            }
        }
        // Grouping by a LEFT-joined table's tenant column instead of the
        // fact table's is a report per merchant keyed the wrong way (it is
        // NULL for rows without a match).
        let joined_tenant = group_exprs.iter().any(|e| joined_tenant_at(e).is_some());
        if tenant_key.is_none() && joined_tenant {
            return Err(self.err(
                self.kw_loc("GROUP", start),
                format!(
                    "GROUP BY {}.{tenant}, the tenant column of the first table in FROM, to key the report by merchant",
                    self.relations[0].label()
                ),
            ));
        }
        let tenant_column = match tenant_key {
            None => None,
            Some(k) => Some(outputs.iter().position(|o| *o == Expr::Key(k)).ok_or_else(|| {
                self.err(
                    self.kw_loc("SELECT", start),
                    format!("the tenant column {tenant} is in GROUP BY but not selected: add it to the select list"),
                )
            })?),
        };
        // Date key: the first GROUP BY expression of DATE type that is selected.
        let mut date_key = None;
        let mut date_column = None;
        for (i, g) in group_exprs.iter().enumerate() {
            if !is_date_typed(g) {
                continue;
            }
            if let Some(c) = outputs.iter().position(|o| *o == Expr::Key(i)) {
                date_key = Some(i);
                date_column = Some(c);
                break;
            }
        }

        Ok(Compiled {
            columns,
            fact_table: fact,
            tenant_column,
            date_column,
            plan: Plan {
                relations: std::mem::take(&mut self.relations),
                joins: std::mem::take(&mut self.joins),
                filter,
                group_exprs,
                aggs: std::mem::take(&mut self.aggs),
                outputs,
                having,
                tenant_key,
                date_key,
            },
        })
    }

    /// A GROUP BY entry: a select position, a select alias, or an expression.
    fn compile_group_by(
        &mut self,
        g: &ast::Expr,
        items: &[(&ast::Expr, Option<&ast::Ident>)],
    ) -> Res<Expr> {
        if let ast::Expr::Value(v) = g {
            if let ast::Value::Number(n, _) = &v.value {
                let loc = self.loc_of(v.span);
                let pos: usize = n.parse().map_err(|_| {
                    self.err(
                        loc,
                        format!("GROUP BY position {n} is not a select item number"),
                    )
                })?;
                let Some((expr, _)) = pos.checked_sub(1).and_then(|i| items.get(i)) else {
                    return Err(self.err(
                        loc,
                        format!(
                            "GROUP BY position {pos} is out of range: the select list has {} items",
                            items.len()
                        ),
                    ));
                };
                return self.expr(expr, Mode::GroupBy).map_err(|e| {
                    if e.message.starts_with("aggregate") {
                        self.err(
                            loc,
                            format!("GROUP BY position {pos} refers to an aggregate"),
                        )
                    } else {
                        e
                    }
                });
            }
        }
        if let ast::Expr::Identifier(id) = g {
            let by_alias = items
                .iter()
                .find(|(_, a)| a.is_some_and(|a| a.value.eq_ignore_ascii_case(&id.value)));
            if let Some((expr, _)) = by_alias {
                let e = self.expr(expr, Mode::GroupBy).map_err(|e| {
                    if e.message.starts_with("aggregate") {
                        self.err(
                            self.loc_of(id.span),
                            format!("GROUP BY `{}` refers to an aggregate", id.value),
                        )
                    } else {
                        e
                    }
                })?;
                // `DATE(created_at) AS created_at … GROUP BY created_at`: MySQL
                // would group by the column, not the alias. Refuse to guess.
                let name = id.value.to_lowercase();
                let mut shadows = false;
                e.walk(&mut |n| {
                    if let Expr::Col(c) = n {
                        shadows |= c.name == name;
                    }
                });
                if shadows && !matches!(&e, Expr::Col(c) if c.name == name) {
                    return Err(self.err(
                        self.loc_of(id.span),
                        format!(
                            "GROUP BY `{}` is ambiguous: it names both a column and a select alias; rename the alias",
                            id.value
                        ),
                    ));
                }
                return Ok(e);
            }
        }
        self.expr(g, Mode::GroupBy)
    }

    /// Replaces sub-expressions equal to a GROUP BY expression by `Key(i)`;
    /// any column left is neither grouped nor aggregated.
    fn bind_keys(&self, e: Expr, groups: &[Expr]) -> Res<Expr> {
        e.rewrite(&mut |node| {
            if node.has_columns() {
                if let Some(i) = groups.iter().position(|g| g == node) {
                    return Ok(Some(Expr::Key(i)));
                }
            }
            if let Expr::Col(c) = node {
                return Err(self.err(
                    c.loc,
                    format!(
                        "column `{}` is neither in GROUP BY nor inside an aggregate",
                        c.written
                    ),
                ));
            }
            Ok(None)
        })
    }

    fn column(&self, parts: &[ast::Ident], span: Span) -> Res<Expr> {
        let loc = self.loc_of(span);
        let (qualifier, name) = match parts {
            [c] => (None, c),
            [q, c] => (Some((None, q)), c),
            [s, q, c] => (Some((Some(s), q)), c),
            _ => {
                let full: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
                return Err(self.err(
                    loc,
                    format!("column reference `{}` is not supported", full.join(".")),
                ));
            }
        };
        let rel = match qualifier {
            None => self.resolve_unqualified(name, loc)?,
            Some((schema, q)) => {
                match self.find_relation(schema.map(|s| s.value.as_str()), &q.value) {
                    Some(i) => i,
                    None => {
                        return Err(self.err(
                            loc,
                            format!(
                                "unknown table `{}` in `{}.{}`",
                                q.value, q.value, name.value
                            ),
                        ))
                    }
                }
            }
        };
        Ok(Expr::Col(ColRef {
            rel,
            name: name.value.to_lowercase(),
            written: name.value.clone(),
            loc,
        }))
    }

    fn unsupported(&self, e: &ast::Expr, what: &str) -> DefinitionError {
        self.err(
            self.loc_of(e.span()),
            format!("{what} is not supported in a report definition"),
        )
    }

    fn boxed(&mut self, e: &ast::Expr, mode: Mode) -> Res<Box<Expr>> {
        Ok(Box::new(self.expr(e, mode)?))
    }

    fn expr(&mut self, e: &ast::Expr, mode: Mode) -> Res<Expr> {
        use ast::Expr as A;
        Ok(match e {
            A::Identifier(id) => {
                let lc = id.value.to_lowercase();
                if mode == Mode::Having {
                    if let Some((_, out)) = self.aliases.iter().find(|(a, _)| *a == lc) {
                        return Ok(out.clone());
                    }
                }
                if mode == Mode::Where && self.renaming_aliases.contains(&lc) {
                    return Err(self.err(
                        self.loc_of(id.span),
                        format!(
                            "`{}` is a select alias: WHERE cannot use select aliases (MySQL reads it as a column); repeat the expression or rename the alias",
                            id.value
                        ),
                    ));
                }
                self.column(std::slice::from_ref(id), id.span)?
            }
            A::CompoundIdentifier(parts) => self.column(parts, e.span())?,
            A::Nested(inner) => self.expr(inner, mode)?,
            A::Value(v) => Expr::Lit(self.literal(&v.value, v.span)?),
            A::TypedString(ts) => {
                let loc = self.loc_of(ts.value.span);
                let text = match &ts.value.value {
                    ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s) => {
                        s.clone()
                    }
                    _ => return Err(self.err(loc, "typed literals need a quoted string")),
                };
                let bad = |kind: &str| self.err(loc, format!("invalid {kind} literal '{text}'"));
                Expr::Lit(match ts.data_type {
                    DataType::Date => Datum::Date(
                        parse_datetime(&text)
                            .filter(|_| !text.contains(':'))
                            .ok_or_else(|| bad("DATE"))?
                            .date(),
                    ),
                    DataType::Datetime(_) | DataType::Timestamp(..) => {
                        Datum::DateTime(parse_datetime(&text).ok_or_else(|| bad("TIMESTAMP"))?)
                    }
                    DataType::Time(..) => {
                        Datum::Time(parse_time(&text).ok_or_else(|| bad("TIME"))?)
                    }
                    ref other => {
                        return Err(self.err(loc, format!("{other} literals are not supported")))
                    }
                })
            }
            A::UnaryOp { op, expr } => match op {
                UnaryOperator::Minus => match self.expr(expr, mode)? {
                    Expr::Lit(Datum::Int(i)) => Expr::Lit(Datum::Int(-i)),
                    Expr::Lit(Datum::Dec(d, s)) => Expr::Lit(Datum::Dec(-d, s)),
                    Expr::Lit(Datum::Float(f)) => Expr::Lit(Datum::Float(-f)),
                    other => Expr::Neg(Box::new(other)),
                },
                UnaryOperator::Plus => self.expr(expr, mode)?,
                UnaryOperator::Not => Expr::Not(self.boxed(expr, mode)?),
                UnaryOperator::BangNot => return Err(self.err(
                    self.loc_of(e.span()),
                    "`!` is not supported (its MySQL precedence differs from NOT): write NOT (…)",
                )),
                other => return Err(self.unsupported(e, &format!("operator {other}"))),
            },
            // `x + INTERVAL n unit`, `INTERVAL n unit + x`, `x - INTERVAL n unit`
            // are DATE_ADD / DATE_SUB, as in MySQL.
            A::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } if matches!(right.as_ref(), A::Interval(_))
                || matches!(left.as_ref(), A::Interval(_)) =>
            {
                let mut loc = self.loc_of(e.span());
                if matches!(left.as_ref(), A::Interval(_)) {
                    loc = self.kw_loc_before("INTERVAL", loc);
                }
                let sub = matches!(op, BinaryOperator::Minus);
                let (date, interval) = match (left.as_ref(), right.as_ref()) {
                    (A::Interval(_), A::Interval(_)) => {
                        return Err(self.err(loc, "adding two INTERVALs is not supported: add each to the date"))
                    }
                    (A::Interval(_), _) if sub => {
                        return Err(self.err(loc, "INTERVAL … - date is not valid: write date - INTERVAL …"))
                    }
                    (A::Interval(iv), date) | (date, A::Interval(iv)) => (date, iv),
                    _ => return Err(self.unsupported(e, "this INTERVAL form")),
                };
                let what = if sub { "- INTERVAL" } else { "+ INTERVAL" };
                let (count, unit) = self.interval(interval, what, loc, mode)?;
                let func = if sub {
                    Func::DateSub(unit)
                } else {
                    Func::DateAdd(unit)
                };
                Expr::Func(func, vec![self.expr(date, mode)?, count])
            }
            A::BinaryOp { left, op, right } => {
                let (l, r) = (self.boxed(left, mode)?, self.boxed(right, mode)?);
                match op {
                    BinaryOperator::Plus => Expr::Arith(ArithOp::Add, l, r),
                    BinaryOperator::Minus => Expr::Arith(ArithOp::Sub, l, r),
                    BinaryOperator::Multiply => Expr::Arith(ArithOp::Mul, l, r),
                    BinaryOperator::Divide => Expr::Arith(ArithOp::Div, l, r),
                    BinaryOperator::MyIntegerDivide => Expr::Arith(ArithOp::IntDiv, l, r),
                    BinaryOperator::Modulo => Expr::Arith(ArithOp::Mod, l, r),
                    BinaryOperator::Eq => Expr::Cmp(CmpOp::Eq, l, r),
                    BinaryOperator::NotEq => Expr::Cmp(CmpOp::Ne, l, r),
                    BinaryOperator::Lt => Expr::Cmp(CmpOp::Lt, l, r),
                    BinaryOperator::LtEq => Expr::Cmp(CmpOp::Le, l, r),
                    BinaryOperator::Gt => Expr::Cmp(CmpOp::Gt, l, r),
                    BinaryOperator::GtEq => Expr::Cmp(CmpOp::Ge, l, r),
                    BinaryOperator::Spaceship => Expr::Cmp(CmpOp::NullSafeEq, l, r),
                    BinaryOperator::And => Expr::Logic(LogicOp::And, l, r),
                    BinaryOperator::Or => Expr::Logic(LogicOp::Or, l, r),
                    BinaryOperator::Xor => {
                        // The parser binds XOR tighter than comparisons; MySQL
                        // binds it looser than AND. Refuse rather than misread.
                        let _ = (l, r);
                        return Err(self.err(
                            self.kw_loc("XOR", self.loc_of(e.span())),
                            "XOR is not supported: write (a AND NOT b) OR (NOT a AND b), or a <> b for truth values",
                        ));
                    }
                    BinaryOperator::StringConcat => {
                        return Err(self.err(
                            self.loc_of(e.span()),
                            "`||` is ambiguous in MySQL (OR unless PIPES_AS_CONCAT is set): write OR or CONCAT()",
                        ))
                    }
                    other => return Err(self.unsupported(e, &format!("operator {other}"))),
                }
            }
            A::IsNull(x) => Expr::IsNull {
                expr: self.boxed(x, mode)?,
                negated: false,
            },
            A::IsNotNull(x) => Expr::IsNull {
                expr: self.boxed(x, mode)?,
                negated: true,
            },
            A::IsUnknown(x) => Expr::IsNull {
                expr: self.boxed(x, mode)?,
                negated: false,
            },
            A::IsNotUnknown(x) => Expr::IsNull {
                expr: self.boxed(x, mode)?,
                negated: true,
            },
            A::IsTrue(x) => Expr::IsBool {
                expr: self.boxed(x, mode)?,
                value: true,
                negated: false,
            },
            A::IsNotTrue(x) => Expr::IsBool {
                expr: self.boxed(x, mode)?,
                value: true,
                negated: true,
            },
            A::IsFalse(x) => Expr::IsBool {
                expr: self.boxed(x, mode)?,
                value: false,
                negated: false,
            },
            A::IsNotFalse(x) => Expr::IsBool {
                expr: self.boxed(x, mode)?,
                value: false,
                negated: true,
            },
            A::IsNotDistinctFrom(a, b) => Expr::Cmp(
                CmpOp::NullSafeEq,
                self.boxed(a, mode)?,
                self.boxed(b, mode)?,
            ),
            A::IsDistinctFrom(a, b) => Expr::Not(Box::new(Expr::Cmp(
                CmpOp::NullSafeEq,
                self.boxed(a, mode)?,
                self.boxed(b, mode)?,
            ))),
            A::InList {
                expr,
                list,
                negated,
            } => Expr::InList {
                expr: self.boxed(expr, mode)?,
                list: list
                    .iter()
                    .map(|x| self.expr(x, mode))
                    .collect::<Res<_>>()?,
                negated: *negated,
            },
            A::Between {
                expr,
                negated,
                low,
                high,
            } => Expr::Between {
                expr: self.boxed(expr, mode)?,
                low: self.boxed(low, mode)?,
                high: self.boxed(high, mode)?,
                negated: *negated,
            },
            A::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(self.unsupported(e, "LIKE ANY"));
                }
                let escape = match escape_char.as_deref() {
                    None => '\\',
                    Some(A::Value(v)) => match &v.value {
                        ast::Value::SingleQuotedString(s) | ast::Value::DoubleQuotedString(s)
                            if s.chars().count() == 1 =>
                        {
                            s.chars().next().unwrap_or('\\')
                        }
                        _ => {
                            return Err(self
                                .err(self.loc_of(v.span), "ESCAPE takes a one-character string"))
                        }
                    },
                    Some(other) => {
                        return Err(self.err(
                            self.loc_of(other.span()),
                            "ESCAPE takes a one-character string",
                        ))
                    }
                };
                if let A::BinaryOp { op, .. } = pattern.as_ref() {
                    if matches!(
                        op,
                        BinaryOperator::Eq
                            | BinaryOperator::NotEq
                            | BinaryOperator::Lt
                            | BinaryOperator::LtEq
                            | BinaryOperator::Gt
                            | BinaryOperator::GtEq
                            | BinaryOperator::Spaceship
                    ) {
                        return Err(self.err(
                            self.loc_of(e.span()),
                            "a comparison after LIKE is read differently by MySQL: add parentheses",
                        ));
                    }
                }
                Expr::Like {
                    expr: self.boxed(expr, mode)?,
                    pattern: self.boxed(pattern, mode)?,
                    escape,
                    negated: *negated,
                }
            }
            A::Case {
                operand,
                conditions,
                else_result,
                ..
            } => Expr::Case {
                operand: match operand {
                    Some(o) => Some(self.boxed(o, mode)?),
                    None => None,
                },
                whens: conditions
                    .iter()
                    .map(|c| Ok((self.expr(&c.condition, mode)?, self.expr(&c.result, mode)?)))
                    .collect::<Res<_>>()?,
                otherwise: match else_result {
                    Some(x) => Some(self.boxed(x, mode)?),
                    None => None,
                },
            },
            A::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if !matches!(kind, ast::CastKind::Cast) || format.is_some() {
                    return Err(self.unsupported(e, "this cast syntax"));
                }
                let to = self.cast_target(data_type, e)?;
                Expr::Cast(self.boxed(expr, mode)?, to)
            }
            A::Convert {
                is_try,
                expr,
                data_type,
                charset,
                styles,
                ..
            } => {
                if *is_try || !styles.is_empty() {
                    return Err(self.unsupported(e, "this CONVERT form"));
                }
                let to = match (data_type, charset) {
                    (Some(t), _) => self.cast_target(t, e)?,
                    (None, Some(_)) => CastTo::Char(None),
                    (None, None) => return Err(self.unsupported(e, "CONVERT without a type")),
                };
                Expr::Cast(self.boxed(expr, mode)?, to)
            }
            A::Extract { field, expr, .. } => {
                let f = match field {
                    DateTimeField::Year => Func::Year,
                    DateTimeField::Quarter => Func::Quarter,
                    DateTimeField::Month => Func::Month,
                    DateTimeField::Day => Func::Day,
                    DateTimeField::Hour => Func::Hour,
                    DateTimeField::Minute => Func::Minute,
                    DateTimeField::Second => Func::Second,
                    other => return Err(self.unsupported(e, &format!("EXTRACT({other} FROM …)"))),
                };
                Expr::Func(f, vec![self.expr(expr, mode)?])
            }
            A::Floor { expr, field } | A::Ceil { expr, field } => {
                if !matches!(
                    field,
                    CeilFloorKind::DateTimeField(DateTimeField::NoDateTime)
                ) {
                    return Err(self.unsupported(e, "FLOOR/CEIL with a second argument"));
                }
                let f = if matches!(e, A::Floor { .. }) {
                    Func::Floor
                } else {
                    Func::Ceil
                };
                Expr::Func(f, vec![self.expr(expr, mode)?])
            }
            A::Function(f) => self.function(f, e, mode)?,
            A::Subquery(_) | A::Exists { .. } | A::InSubquery { .. } => {
                return Err(self.err(
                    self.loc_of(e.span()),
                    "subqueries are not supported in a report definition",
                ))
            }
            A::Interval(_) => {
                return Err(self.err(
                    self.kw_loc_before("INTERVAL", self.loc_of(e.span())),
                    "INTERVAL other than in DATE_ADD()/DATE_SUB() or added to a date (x + INTERVAL n unit) is not supported in a report definition",
                ))
            }
            A::Collate { .. } => return Err(self.unsupported(e, "COLLATE")),
            A::Substring {
                expr,
                substring_from,
                substring_for,
                ..
            } => {
                let Some(from) = substring_from else {
                    return Err(self.err(
                        self.loc_of(e.span()),
                        "SUBSTRING() takes a position: SUBSTRING(s, pos[, len])",
                    ));
                };
                let mut args = vec![self.expr(expr, mode)?, self.expr(from, mode)?];
                if let Some(len) = substring_for {
                    args.push(self.expr(len, mode)?);
                }
                Expr::Func(Func::Substring, args)
            }
            A::Trim {
                trim_where,
                trim_what,
                expr,
                trim_characters,
            } => {
                if trim_characters.is_some() {
                    return Err(self.unsupported(e, "TRIM(s, characters)"));
                }
                let side = match trim_where {
                    None | Some(ast::TrimWhereField::Both) => TrimSide::Both,
                    Some(ast::TrimWhereField::Leading) => TrimSide::Leading,
                    Some(ast::TrimWhereField::Trailing) => TrimSide::Trailing,
                };
                let mut args = vec![self.expr(expr, mode)?];
                if let Some(what) = trim_what {
                    args.push(self.expr(what, mode)?);
                }
                Expr::Func(Func::Trim(side), args)
            }
            A::Position { .. } => return Err(self.unsupported(e, "POSITION()")),
            A::RLike { .. } | A::SimilarTo { .. } => return Err(self.unsupported(e, "REGEXP")),
            A::ILike { .. } => return Err(self.unsupported(e, "ILIKE")),
            other => return Err(self.unsupported(e, &format!("expression `{other}`"))),
        })
    }

    fn literal(&self, v: &ast::Value, span: Span) -> Res<Datum> {
        let loc = self.loc_of(span);
        Ok(match v {
            ast::Value::Number(n, _) => {
                if n.contains(['e', 'E']) {
                    Datum::Float(
                        n.parse()
                            .map_err(|_| self.err(loc, format!("invalid number {n}")))?,
                    )
                } else if n.contains('.') {
                    let d: Decimal = n
                        .parse()
                        .map_err(|_| self.err(loc, format!("number {n} is out of range")))?;
                    Datum::Dec(d, d.scale())
                } else if let Ok(i) = n.parse::<i64>() {
                    Datum::Int(i)
                } else if let Ok(u) = n.parse::<u64>() {
                    Datum::UInt(u)
                } else {
                    let d: Decimal = n
                        .parse()
                        .map_err(|_| self.err(loc, format!("number {n} is out of range")))?;
                    Datum::Dec(d, 0)
                }
            }
            ast::Value::SingleQuotedString(s)
            | ast::Value::DoubleQuotedString(s)
            | ast::Value::NationalStringLiteral(s) => Datum::Str(s.clone()),
            ast::Value::Boolean(b) => Datum::bool(*b),
            ast::Value::Null => Datum::Null,
            other => {
                return Err(self.err(
                    loc,
                    format!("literal {other} is not supported in a report definition"),
                ))
            }
        })
    }

    fn cast_target(&self, t: &DataType, e: &ast::Expr) -> Res<CastTo> {
        Ok(match t {
            DataType::Date => CastTo::Date,
            DataType::Datetime(_) | DataType::Timestamp(..) => CastTo::DateTime,
            DataType::Time(..) => CastTo::Time,
            DataType::Signed
            | DataType::SignedInteger
            | DataType::Int(_)
            | DataType::Integer(_)
            | DataType::BigInt(_) => CastTo::Signed,
            DataType::Unsigned
            | DataType::UnsignedInteger
            | DataType::IntUnsigned(_)
            | DataType::IntegerUnsigned(_)
            | DataType::BigIntUnsigned(_) => CastTo::Unsigned,
            DataType::Decimal(info) | DataType::Numeric(info) | DataType::Dec(info) => {
                let (p, s) = match info {
                    ExactNumberInfo::None => (10, 0),
                    ExactNumberInfo::Precision(p) => (*p, 0),
                    ExactNumberInfo::PrecisionAndScale(p, s) => (*p, (*s).max(0) as u64),
                };
                if s > 28 || p > 65 || s > p {
                    return Err(self.unsupported(e, &format!("DECIMAL({p},{s})")));
                }
                CastTo::Decimal(p as u32, s as u32)
            }
            DataType::Char(len) | DataType::Character(len) | DataType::Varchar(len) => {
                CastTo::Char(len.as_ref().and_then(|l| match l {
                    ast::CharacterLength::IntegerLength { length, .. } => Some(*length),
                    ast::CharacterLength::Max => None,
                }))
            }
            DataType::Text | DataType::String(_) | DataType::Binary(_) => CastTo::Char(None),
            DataType::Double(_)
            | DataType::DoublePrecision
            | DataType::Float(_)
            | DataType::Real => CastTo::Double,
            other => return Err(self.unsupported(e, &format!("CAST to {other}"))),
        })
    }

    fn function(&mut self, f: &ast::Function, e: &ast::Expr, mode: Mode) -> Res<Expr> {
        let loc = self.loc_of(f.name.span());
        let name = match f.name.0.as_slice() {
            [part] => part
                .as_ident()
                .map(|i| i.value.to_uppercase())
                .unwrap_or_default(),
            _ => String::new(),
        };
        if f.over.is_some() {
            return Err(self.err(
                loc,
                format!(
                    "window functions ({name}(…) OVER …) are not supported in a report definition"
                ),
            ));
        }
        if f.filter.is_some() || !f.within_group.is_empty() || f.null_treatment.is_some() {
            return Err(self.err(
                loc,
                format!("{name}() with FILTER/WITHIN GROUP is not supported"),
            ));
        }
        if NON_DETERMINISTIC.contains(&name.as_str()) {
            return Err(self.err(
                loc,
                format!("{name}() is not deterministic: a report must be a function of the rows it reads"),
            ));
        }
        let (distinct, args): (bool, Vec<&FunctionArgExpr>) = match &f.args {
            FunctionArguments::None => (false, Vec::new()),
            FunctionArguments::Subquery(_) => {
                return Err(self.err(loc, "subqueries are not supported in a report definition"))
            }
            FunctionArguments::List(list) => {
                if !list.clauses.is_empty() {
                    return Err(
                        self.err(loc, format!("clauses inside {name}(…) are not supported"))
                    );
                }
                let mut args = Vec::with_capacity(list.args.len());
                for a in &list.args {
                    match a {
                        FunctionArg::Unnamed(x) => args.push(x),
                        _ => {
                            return Err(self.err(
                                loc,
                                format!("named arguments to {name}() are not supported"),
                            ))
                        }
                    }
                }
                (
                    matches!(list.duplicate_treatment, Some(DuplicateTreatment::Distinct)),
                    args,
                )
            }
        };
        if let Some(kind) = match name.as_str() {
            "COUNT" => Some(AggKind::Count),
            "SUM" => Some(AggKind::Sum),
            "AVG" => Some(AggKind::Avg),
            "MIN" => Some(AggKind::Min),
            "MAX" => Some(AggKind::Max),
            _ => None,
        } {
            if !mode.allows_aggregates() {
                return Err(self.err(
                    loc,
                    format!("aggregate functions are not allowed {}", mode.place()),
                ));
            }
            let spec = match (kind, distinct, args.as_slice()) {
                (AggKind::Count, false, [FunctionArgExpr::Wildcard]) => AggSpec {
                    kind: AggKind::CountStar,
                    arg: None,
                },
                (_, _, [FunctionArgExpr::Expr(x)]) => {
                    let kind = match (kind, distinct) {
                        (AggKind::Count, true) => AggKind::CountDistinct,
                        (AggKind::Sum | AggKind::Avg, true) => {
                            return Err(
                                self.err(loc, format!("{name}(DISTINCT …) is not supported"))
                            )
                        }
                        (k, _) => k,
                    };
                    let arg = self.expr(x, Mode::AggArg)?;
                    // COUNT(1), COUNT('x'): a non-NULL constant counts every row.
                    match (&kind, &arg) {
                        (AggKind::Count, Expr::Lit(d)) if !d.is_null() => AggSpec {
                            kind: AggKind::CountStar,
                            arg: None,
                        },
                        _ => AggSpec {
                            kind,
                            arg: Some(arg),
                        },
                    }
                }
                (AggKind::Count, true, [_, _, ..]) => {
                    return Err(self.err(
                        loc,
                        "COUNT(DISTINCT …) of several expressions is not supported",
                    ))
                }
                _ => return Err(self.err(loc, format!("{name}() takes one argument"))),
            };
            let idx = match self.aggs.iter().position(|a| *a == spec) {
                Some(i) => i,
                None => {
                    self.aggs.push(spec);
                    self.aggs.len() - 1
                }
            };
            return Ok(Expr::Agg(idx));
        }
        if UNSUPPORTED_AGGREGATES.contains(&name.as_str()) {
            return Err(self.err(loc, format!("aggregate {name}() is not supported")));
        }
        if let Some(sub) = match name.as_str() {
            "DATE_ADD" | "ADDDATE" => Some(false),
            "DATE_SUB" | "SUBDATE" => Some(true),
            _ => None,
        } {
            return self.date_add(&name, sub, &args, loc, mode);
        }
        if name == "TIMESTAMPDIFF" {
            return self.timestamp_diff(&args, loc, mode);
        }
        if name == "CONVERT_TZ" {
            return self.convert_tz(&args, loc, mode);
        }
        let Some(func) = Func::lookup(&name) else {
            return Err(self.err(loc, format!("unknown function {}()", f.name)));
        };
        if distinct {
            return Err(self.err(loc, format!("DISTINCT is not allowed in {name}()")));
        }
        let (min, max) = func.arity();
        if args.len() < min || max.is_some_and(|m| args.len() > m) {
            let expected = match max {
                Some(m) if m == min => format!("{min}"),
                Some(m) => format!("{min} to {m}"),
                None => format!("at least {min}"),
            };
            return Err(self.err(
                loc,
                format!(
                    "{name}() takes {expected} argument{}, found {}",
                    if expected == "1" { "" } else { "s" },
                    args.len()
                ),
            ));
        }
        let mut compiled = Vec::with_capacity(args.len());
        for a in args {
            match a {
                FunctionArgExpr::Expr(x) => compiled.push(self.expr(x, mode)?),
                _ => return Err(self.err(loc, format!("`*` is not an argument of {name}()"))),
            }
        }
        if func == Func::DateFormat {
            if let Some(Expr::Lit(Datum::Str(fmt))) = compiled.get(1) {
                if let Some(s) = unsupported_specifier(fmt) {
                    return Err(
                        self.err(loc, format!("DATE_FORMAT specifier %{s} is not supported"))
                    );
                }
            }
        }
        let _ = e;
        Ok(Expr::Func(func, compiled))
    }

    /// `DATE_ADD(x, INTERVAL n unit)` and `DATE_SUB`; `ADDDATE(x, n)` and
    /// `SUBDATE(x, n)` count days.
    fn date_add(
        &mut self,
        name: &str,
        sub: bool,
        args: &[&FunctionArgExpr],
        loc: Loc,
        mode: Mode,
    ) -> Res<Expr> {
        let [FunctionArgExpr::Expr(x), FunctionArgExpr::Expr(n)] = args else {
            return Err(self.err(
                loc,
                format!("{name}() takes 2 arguments: a date and INTERVAL n unit"),
            ));
        };
        let (count, unit) = match n {
            ast::Expr::Interval(iv) => self.interval(iv, &format!("{name}()"), loc, mode)?,
            n if matches!(name, "ADDDATE" | "SUBDATE") => (self.expr(n, mode)?, IntervalUnit::Day),
            _ => {
                return Err(self.err(
                    loc,
                    format!("{name}() takes INTERVAL n unit as its second argument"),
                ))
            }
        };
        let func = if sub {
            Func::DateSub(unit)
        } else {
            Func::DateAdd(unit)
        };
        Ok(Expr::Func(func, vec![self.expr(x, mode)?, count]))
    }

    /// `CONVERT_TZ(x, '+hh:mm', '+hh:mm')`: fixed offsets only (named zones
    /// and `SYSTEM` depend on the server's time zone settings).
    fn convert_tz(&mut self, args: &[&FunctionArgExpr], loc: Loc, mode: Mode) -> Res<Expr> {
        let [FunctionArgExpr::Expr(x), FunctionArgExpr::Expr(from), FunctionArgExpr::Expr(to)] =
            args
        else {
            return Err(self.err(
                loc,
                "CONVERT_TZ() takes 3 arguments: a time and two UTC offsets ('+08:00')",
            ));
        };
        let mut offset = |e: &ast::Expr| -> Res<i32> {
            match self.expr(e, mode)? {
                Expr::Lit(Datum::Str(text)) => parse_utc_offset(&text).ok_or_else(|| {
                    self.err(
                        loc,
                        format!(
                            "CONVERT_TZ(): '{text}' is not a UTC offset from -12:59 to +13:00 ('+08:00'); named zones and SYSTEM depend on the server's time zone settings"
                        ),
                    )
                }),
                _ => Err(self.err(
                    loc,
                    "CONVERT_TZ(): the time zones must be literal UTC offsets ('+08:00')",
                )),
            }
        };
        let (from, to) = (offset(from)?, offset(to)?);
        Ok(Expr::Func(
            Func::ConvertTz { from, to },
            vec![self.expr(x, mode)?],
        ))
    }

    /// `TIMESTAMPDIFF(unit, a, b)`.
    fn timestamp_diff(&mut self, args: &[&FunctionArgExpr], loc: Loc, mode: Mode) -> Res<Expr> {
        let [FunctionArgExpr::Expr(unit), FunctionArgExpr::Expr(a), FunctionArgExpr::Expr(b)] =
            args
        else {
            return Err(self.err(
                loc,
                "TIMESTAMPDIFF() takes 3 arguments: a unit, a start and an end",
            ));
        };
        let unit = match unit {
            ast::Expr::Identifier(id) if id.quote_style.is_none() => {
                interval_unit(&id.value.to_ascii_uppercase())
            }
            _ => None,
        };
        let Some(unit) = unit else {
            return Err(self.err(
                loc,
                "TIMESTAMPDIFF(): the unit must be SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR",
            ));
        };
        Ok(Expr::Func(
            Func::TimestampDiff(unit),
            vec![self.expr(a, mode)?, self.expr(b, mode)?],
        ))
    }

    /// The count and unit of `INTERVAL n unit`; `what` names the
    /// construct in messages (`DATE_ADD()`, `+ INTERVAL`).
    fn interval(
        &mut self,
        iv: &ast::Interval,
        what: &str,
        loc: Loc,
        mode: Mode,
    ) -> Res<(Expr, IntervalUnit)> {
        if iv.last_field.is_some()
            || iv.leading_precision.is_some()
            || iv.fractional_seconds_precision.is_some()
        {
            return Err(self.err(
                loc,
                format!("{what}: only INTERVAL n unit with one unit is supported"),
            ));
        }
        let unit = match &iv.leading_field {
            Some(DateTimeField::Second | DateTimeField::Seconds) => IntervalUnit::Second,
            Some(DateTimeField::Minute | DateTimeField::Minutes) => IntervalUnit::Minute,
            Some(DateTimeField::Hour | DateTimeField::Hours) => IntervalUnit::Hour,
            Some(DateTimeField::Day | DateTimeField::Days) => IntervalUnit::Day,
            Some(DateTimeField::Week(None) | DateTimeField::Weeks) => IntervalUnit::Week,
            Some(DateTimeField::Month | DateTimeField::Months) => IntervalUnit::Month,
            Some(DateTimeField::Quarter) => IntervalUnit::Quarter,
            Some(DateTimeField::Year | DateTimeField::Years) => IntervalUnit::Year,
            other => {
                return Err(self.err(
                    loc,
                    format!(
                        "{what}: INTERVAL unit {} is not supported (use SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR)",
                        other.as_ref().map_or("(none)".to_string(), |u| u.to_string())
                    ),
                ))
            }
        };
        Ok((self.expr(&iv.value, mode)?, unit))
    }
}

/// A unit of `TIMESTAMPDIFF` by name.
fn interval_unit(name: &str) -> Option<IntervalUnit> {
    Some(match name {
        "SECOND" => IntervalUnit::Second,
        "MINUTE" => IntervalUnit::Minute,
        "HOUR" => IntervalUnit::Hour,
        "DAY" => IntervalUnit::Day,
        "WEEK" => IntervalUnit::Week,
        "MONTH" => IntervalUnit::Month,
        "QUARTER" => IntervalUnit::Quarter,
        "YEAR" => IntervalUnit::Year,
        _ => return None,
    })
}

/// The operands of a chain of ANDs (parentheses looked through).
fn flatten_and<'e>(e: &'e ast::Expr, out: &mut Vec<&'e ast::Expr>) {
    match e {
        ast::Expr::Nested(inner) => flatten_and(inner, out),
        ast::Expr::BinaryOp {
            left,
            op: BinaryOperator::And,
            right,
        } => {
            flatten_and(left, out);
            flatten_and(right, out);
        }
        other => out.push(other),
    }
}

/// Whether an expression is statically of DATE type.
/// A DATE, or a day written as DATE does (`DATE_FORMAT(x, '%Y-%m-%d')`).
fn is_date_typed(e: &Expr) -> bool {
    match e {
        Expr::Func(Func::DateFormat, args) => {
            matches!(args.get(1), Some(Expr::Lit(Datum::Str(f))) if f == "%Y-%m-%d")
        }
        // A day moved by days, weeks, months, …: `DATE(x) + INTERVAL 1 DAY`.
        Expr::Func(Func::DateAdd(unit) | Func::DateSub(unit), args) => {
            unit.keeps_date() && args.first().is_some_and(is_date_typed)
        }
        Expr::Func(f, _) => f.returns_date(),
        Expr::Cast(_, CastTo::Date) => true,
        Expr::Lit(Datum::Date(_)) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use crate::report::{ColumnRole, Report};
    use crate::tenant::TenantColumns;

    fn parse(sql: &str) -> Result<Report, String> {
        Report::parse("r", "reports/r.sql", sql, &TenantColumns::default())
            .map_err(|e| e.to_string())
    }

    fn rejected(sql: &str) -> String {
        match parse(sql) {
            Ok(_) => format!("accepted: {sql}"),
            Err(e) => e,
        }
    }

    #[test]
    fn accepts_a_typical_report() {
        let sql = "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) AS orders,\n  SUM(amount) AS gmv, ROUND(SUM(amount) / COUNT(*), 2) AS avg_ticket,\n  COUNT(DISTINCT customer_id), sum(amount) - SUM(refund)\nFROM orders\nWHERE status <> 'cancelled'\nGROUP BY merchant_id, day";
        let r = parse(sql).unwrap_or_else(|e| panic!("{e}"));
        let names: Vec<&str> = r.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "merchant_id",
                "day",
                "orders",
                "gmv",
                "avg_ticket",
                "COUNT(DISTINCT customer_id)",
                "sum(amount) - SUM(refund)"
            ]
        );
        let roles: Vec<ColumnRole> = r.columns.iter().map(|c| c.role).collect();
        assert_eq!(
            roles[..3],
            [ColumnRole::Key, ColumnRole::Key, ColumnRole::Value]
        );
        assert_eq!(r.tenant_column, Some(0));
        assert_eq!(r.date_column, Some(1));
        assert_eq!(r.fact_table, "orders");
        assert_eq!(r.tables, ["orders"]);
        assert_eq!(r.key_len(), 2);
        // SUM(amount) is computed once for gmv, avg_ticket and the difference.
        assert_eq!(r.plan.aggs.len(), 4);
    }

    #[test]
    fn group_by_positions_aliases_and_qualified_names() {
        let r = parse("SELECT o.merchant_id AS m, HOUR(o.created_at) h, CAST(created_at AS DATE) d, COUNT(*) n FROM shop.orders AS o GROUP BY m, HOUR(created_at), 3 HAVING n > 1")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tenant_column, Some(0));
        assert_eq!(r.date_column, Some(2));
        assert_eq!(r.key_len(), 3);
        assert_eq!(r.columns[1].role, ColumnRole::Key);
        assert_eq!(r.plan.relations[0].schema.as_deref(), Some("shop"));
        // No date key: HOUR() is not a DATE.
        let r =
            parse("SELECT merchant_id, HOUR(created_at) AS h, COUNT(*) FROM orders GROUP BY 1, 2")
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.date_column, None);
        assert_eq!(r.columns[2].name, "COUNT(*)");
        // A day formatted as DATE is written is the date key; other formats
        // are not.
        let r = parse("SELECT merchant_id, DATE_FORMAT(created_at, '%Y-%m') AS month, DATE_FORMAT(created_at, '%Y-%m-%d') AS day, COUNT(*) FROM orders GROUP BY 1, 2, 3")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.date_column, Some(2));
        // A day moved by whole days is a day; moved by hours it is a time.
        let r = parse("SELECT merchant_id, created_at + INTERVAL 8 HOUR AS t, DATE(created_at) - INTERVAL 1 MONTH AS m, COUNT(*) FROM orders GROUP BY 1, 2, 3")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.date_column, Some(2));
        let r = parse("SELECT merchant_id, DATE(created_at) + INTERVAL 8 HOUR AS t, COUNT(*) FROM orders GROUP BY 1, 2")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.date_column, None);
    }

    #[test]
    fn tenant_column_is_per_table() {
        let mut t = TenantColumns::default();
        t.per_table.insert("merchants".into(), "id".into());
        let r = Report::parse(
            "m",
            "m.sql",
            "SELECT id, city, COUNT(*) FROM merchants GROUP BY id, city",
            &t,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tenant_column, Some(0));
        // Not grouped by the tenant column: a report across merchants.
        let r = Report::parse(
            "m",
            "m.sql",
            "SELECT city, COUNT(*) FROM merchants GROUP BY city",
            &t,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tenant_column, None);
        assert_eq!(r.plan.tenant_key, None);
    }

    #[test]
    fn rejects_unsupported_sql_with_location_and_reason() {
        let cases = [
            (
                "SELECT merchant_id, COUNT(*) FROM orders, items GROUP BY merchant_id",
                "reports/r.sql:1:43: joining tables with a comma is not supported: write JOIN … ON …",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id\nORDER BY 2 DESC",
                "reports/r.sql:2:1: ORDER BY is not allowed in a report definition: report rows are identified by their key; sort when querying",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id LIMIT 10",
                "reports/r.sql:1:63: LIMIT is not allowed in a report definition: a report holds every group; page when querying",
            ),
            (
                "SELECT * FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:8: SELECT * is not supported: list the report's columns",
            ),
            (
                "SELECT DISTINCT merchant_id FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:8: SELECT DISTINCT is not supported: GROUP BY the columns instead",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id UNION SELECT merchant_id, COUNT(*) FROM refunds GROUP BY merchant_id",
                "reports/r.sql:1:63: UNION is not supported in a report definition: a report is one SELECT",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders WHERE created_at > NOW() GROUP BY merchant_id",
                "reports/r.sql:1:61: NOW() is not deterministic: a report must be a function of the rows it reads",
            ),
            (
                "SELECT merchant_id, SUM(RAND()) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: RAND() is not deterministic: a report must be a function of the rows it reads",
            ),
            (
                "SELECT merchant_id, FOO(amount) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:21: unknown function FOO()",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders",
                "reports/r.sql:1:35: a report needs GROUP BY: its GROUP BY expressions are the key of its rows",
            ),
            (
                "SELECT merchant_id, MAX(DATE_ADD(created_at, 8)) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: DATE_ADD() takes INTERVAL n unit as its second argument",
            ),
            (
                "SELECT merchant_id, MAX(DATE_ADD(created_at, INTERVAL 5 MICROSECOND)) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: DATE_ADD(): INTERVAL unit MICROSECOND is not supported (use SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR)",
            ),
            (
                "SELECT merchant_id, MAX(CONVERT_TZ(created_at, 'UTC', '+08:00')) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: CONVERT_TZ(): 'UTC' is not a UTC offset from -12:59 to +13:00 ('+08:00'); named zones and SYSTEM depend on the server's time zone settings",
            ),
            (
                "SELECT merchant_id, MAX(CONVERT_TZ(created_at, '+00:00', status)) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: CONVERT_TZ(): the time zones must be literal UTC offsets ('+08:00')",
            ),
            (
                "SELECT merchant_id, MAX(TIMESTAMPDIFF(FORTNIGHT, created_at, created_at)) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: TIMESTAMPDIFF(): the unit must be SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR",
            ),
            (
                "SELECT merchant_id, MAX(INTERVAL 1 DAY - created_at) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: INTERVAL … - date is not valid: write date - INTERVAL …",
            ),
            (
                "SELECT merchant_id, MAX(created_at + INTERVAL 5 MICROSECOND) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: + INTERVAL: INTERVAL unit MICROSECOND is not supported (use SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, QUARTER or YEAR)",
            ),
            (
                "SELECT merchant_id, MAX(created_at * INTERVAL 1 DAY) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:38: INTERVAL other than in DATE_ADD()/DATE_SUB() or added to a date (x + INTERVAL n unit) is not supported in a report definition",
            ),
            (
                "SELECT merchant_id, status, COUNT(*) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:21: column `status` is neither in GROUP BY nor inside an aggregate",
            ),
            (
                "SELECT merchant_id, SUM(amount) OVER (PARTITION BY status) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:21: window functions (SUM(…) OVER …) are not supported in a report definition",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders WHERE customer_id IN (SELECT id FROM vip) GROUP BY merchant_id",
                "reports/r.sql:1:48: subqueries are not supported in a report definition",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM (SELECT * FROM orders) t GROUP BY merchant_id",
                "reports/r.sql:1:36: subqueries are not supported in a report definition",
            ),
            (
                "SELECT status, COUNT(*) FROM orders GROUP BY merchant_id, status",
                "reports/r.sql:1:1: the tenant column merchant_id is in GROUP BY but not selected: add it to the select list",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders WHERE SUM(amount) > 0 GROUP BY merchant_id",
                "reports/r.sql:1:48: aggregate functions are not allowed in WHERE",
            ),
            (
                "SELECT merchant_id, SUM(COUNT(*)) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:25: aggregate functions are not allowed inside another aggregate",
            ),
            (
                "SELECT merchant_id, COUNT(*) AS n FROM orders GROUP BY merchant_id, n",
                "reports/r.sql:1:69: GROUP BY `n` refers to an aggregate",
            ),
            (
                "SELECT merchant_id, DATE(created_at) AS created_at, COUNT(*) FROM orders GROUP BY merchant_id, created_at",
                "reports/r.sql:1:96: GROUP BY `created_at` is ambiguous: it names both a column and a select alias; rename the alias",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id, 5",
                "reports/r.sql:1:64: GROUP BY position 5 is out of range: the select list has 2 items",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id WITH ROLLUP",
                "reports/r.sql:1:63: GROUP BY modifiers (WITH ROLLUP, …) are not supported in a report definition",
            ),
            (
                "SELECT merchant_id, COUNT(*) FRM orders GROUP BY merchant_id",
                "reports/r.sql:1:34: syntax error: Expected: end of statement, found: orders",
            ),
            (
                "DELETE FROM orders",
                "reports/r.sql:1:1: a report is a SELECT statement; found DELETE",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders GROUP BY merchant_id; SELECT 1",
                "reports/r.sql:1:64: a report is one SELECT statement; found 2 statements",
            ),
            (
                "SELECT merchant_id, IF(a, b) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:21: IF() takes 3 arguments, found 2",
            ),
            (
                "SELECT merchant_id, DATE_FORMAT(created_at, '%Y-%u') AS w, COUNT(*) FROM orders GROUP BY merchant_id, w",
                "reports/r.sql:1:21: DATE_FORMAT specifier %u is not supported",
            ),
            (
                "SELECT merchant_id, COUNT(*) FROM orders WHERE a || b GROUP BY merchant_id",
                "reports/r.sql:1:48: `||` is ambiguous in MySQL (OR unless PIPES_AS_CONCAT is set): write OR or CONCAT()",
            ),
            (
                "SELECT merchant_id, SUM(a > 1 XOR b > 2) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:31: XOR is not supported: write (a AND NOT b) OR (NOT a AND b), or a <> b for truth values",
            ),
            (
                "SELECT merchant_id, DATE(created_at) AS day, COUNT(*) FROM orders WHERE day > '2026-01-01' GROUP BY 1, 2",
                "reports/r.sql:1:73: `day` is a select alias: WHERE cannot use select aliases (MySQL reads it as a column); repeat the expression or rename the alias",
            ),
            (
                "SELECT merchant_id, GROUP_CONCAT(status) FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:21: aggregate GROUP_CONCAT() is not supported",
            ),
            (
                "SELECT merchant_id, COUNT(*) AS n, COUNT(status) AS N FROM orders GROUP BY merchant_id",
                "reports/r.sql:1:53: duplicate column name `n`: give the select items distinct aliases",
            ),
            (
                "SELECT x.merchant_id, COUNT(*) FROM orders o GROUP BY merchant_id",
                "reports/r.sql:1:8: unknown table `x` in `x.merchant_id`",
            ),
            (
                "WITH t AS (SELECT * FROM orders) SELECT merchant_id, COUNT(*) FROM t GROUP BY merchant_id",
                "reports/r.sql:1:1: WITH (common table expressions) is not supported in a report definition",
            ),
            ("", "reports/r.sql:1:1: the file holds no SQL statement"),
        ];
        assert_cases(&cases);
    }

    fn assert_cases(cases: &[(&str, &str)]) {
        let mut failures = Vec::new();
        for &(sql, want) in cases {
            let got = rejected(sql);
            if got != want {
                failures.push(format!("sql:  {sql}\nwant: {want}\ngot:  {got}\n"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    fn shop() -> TenantColumns {
        let mut t = TenantColumns::default();
        t.per_table.insert("merchants".into(), "id".into());
        t.captured = Some(
            ["merchants", "orders", "order_items", "products"]
                .map(String::from)
                .into(),
        );
        t
    }

    const ITEMS: &str = "SELECT i.merchant_id, DATE(o.created_at) AS day, p.category, COUNT(*) AS lines,\n  SUM(qty) AS units, SUM(i.qty * i.price) AS revenue\nFROM order_items AS i\n  JOIN orders o ON o.id = i.order_id\n  LEFT OUTER JOIN products p ON p.merchant_id = i.merchant_id AND (p.id = i.product_id)\nWHERE status IN ('paid', 'shipped')\nGROUP BY i.merchant_id, day, p.category";

    #[test]
    fn accepts_equality_joins() {
        use crate::compile::JoinKind;
        use crate::eval::LATE_BOUND;
        let r =
            Report::parse("items", "items.sql", ITEMS, &shop()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.fact_table, "order_items");
        assert_eq!(r.tables, ["order_items", "orders", "products"]);
        assert!(r.has_joins());
        assert_eq!((r.tenant_column, r.date_column), (Some(0), Some(1)));
        let joins = &r.plan.joins;
        assert_eq!(joins.len(), 2);
        assert_eq!(
            (joins[0].rel, joins[0].kind, joins[0].probe),
            (1, JoinKind::Inner, 0)
        );
        assert_eq!(joins[0].on[0].0, "id");
        assert_eq!(
            (joins[0].on[0].1.rel, joins[0].on[0].1.name.as_str()),
            (0, "order_id")
        );
        // The tenant equality is not used to find rows: p.id = i.product_id is.
        assert_eq!(
            (joins[1].rel, joins[1].kind, joins[1].probe),
            (2, JoinKind::Left, 1)
        );
        assert_eq!(joins[1].on[1].0, "id");
        // `status` is not tied to a table by the report: it is read from
        // the joined row that has it. `qty` is `i.qty` (named so elsewhere).
        let mut late = Vec::new();
        for e in r
            .plan
            .filter
            .iter()
            .chain(r.plan.aggs.iter().filter_map(|a| a.arg.as_ref()))
        {
            e.walk(&mut |n| {
                if let crate::eval::Expr::Col(c) = n {
                    if c.rel == LATE_BOUND {
                        late.push(c.name.clone());
                    }
                }
            });
        }
        assert_eq!(late, ["status"]);

        // An unqualified column the report ties to one table; merchants'
        // tenant column is `id`, so `merchant_id` is the order's.
        let r = Report::parse(
            "cities",
            "cities.sql",
            "SELECT merchant_id, m.city, COUNT(*) FROM orders o INNER JOIN merchants m ON m.id = o.merchant_id GROUP BY merchant_id, city",
            &shop(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tenant_column, Some(0));
        assert_eq!(r.columns[1].name, "city");
        assert_eq!(r.columns[1].role, ColumnRole::Key);
        // Grouping by an inner-joined table's tenant column keys the report
        // by the fact table's: the joined rows are the same merchant's.
        let r = Report::parse(
            "lines",
            "lines.sql",
            "SELECT o.merchant_id AS shop, COUNT(*) AS lines FROM order_items i JOIN orders o ON o.id = i.order_id GROUP BY o.merchant_id",
            &shop(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.tenant_column, Some(0));
        assert_eq!(r.columns[0].name, "shop");
        assert!(matches!(
            &r.plan.group_exprs[0],
            crate::eval::Expr::Col(c) if c.rel == 0 && c.name == "merchant_id"
        ));
        // The examples of docs/reports.md.
        for sql in [
            "SELECT i.merchant_id, DATE(o.created_at) AS day, p.category, COUNT(*) AS order_lines, SUM(i.qty) AS units, SUM(i.qty * i.price_cents) AS revenue_cents FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id WHERE o.status IN ('paid', 'shipped') GROUP BY i.merchant_id, day, p.category",
            "SELECT o.merchant_id, m.city, DATE(o.created_at) AS day, COUNT(*) AS orders FROM orders o JOIN merchants m ON m.id = o.merchant_id GROUP BY o.merchant_id, m.city, day",
            "SELECT o.merchant_id, DATE(o.created_at) AS day, COUNT(DISTINCT o.id) AS orders, COUNT(i.id) AS item_lines FROM orders o LEFT JOIN order_items i ON i.order_id = o.id GROUP BY o.merchant_id, day",
        ] {
            let r = Report::parse("doc", "doc.sql", sql, &shop()).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((r.tenant_column, r.date_column.is_some()), (Some(0), true));
        }
    }

    #[test]
    fn rejects_unsupported_joins_with_location_and_reason() {
        let cases = [
            (
                "SELECT merchant_id, COUNT(*) FROM orders o JOIN order_items i ON o.id = i.order_id GROUP BY merchant_id",
                "reports/r.sql:1:93: column `merchant_id` is ambiguous: `o` and `i` both have it; qualify it (`o.merchant_id`)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o RIGHT JOIN order_items i ON i.order_id = o.id GROUP BY o.merchant_id",
                "reports/r.sql:1:46: RIGHT JOIN is not supported: put the table whose rows the report counts first in FROM and LEFT JOIN the others",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o\nFULL OUTER JOIN order_items i ON i.order_id = o.id GROUP BY o.merchant_id",
                "reports/r.sql:2:1: FULL OUTER JOIN is not supported in a report definition",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o CROSS JOIN products p GROUP BY o.merchant_id",
                "reports/r.sql:1:46: CROSS JOIN is not supported: join with ON conditions comparing columns (ON a.x = b.y)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.price > o.amount GROUP BY o.merchant_id",
                "reports/r.sql:1:65: ON conditions must be equalities between columns joined with AND (ON p.x = t.y AND …); found `p.price > o.amount`",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.id = o.product_id OR p.id = 0 GROUP BY o.merchant_id",
                "reports/r.sql:1:65: ON conditions must be equalities between columns joined with AND (ON p.x = t.y AND …); found `p.id = o.product_id OR p.id = 0`",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.id = o.product_id AND p.active = 1 GROUP BY o.merchant_id",
                "reports/r.sql:1:89: ON conditions must be equalities between columns joined with AND (ON p.x = t.y AND …); found `p.active = 1`",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p USING (id) GROUP BY o.merchant_id",
                "reports/r.sql:1:46: JOIN … USING is not supported: write ON with the columns of both tables (ON a.x = b.x)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o NATURAL JOIN products p GROUP BY o.merchant_id",
                "reports/r.sql:1:46: NATURAL JOIN is not supported: write ON with the columns of both tables (ON a.x = b.x)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p GROUP BY o.merchant_id",
                "reports/r.sql:1:46: a JOIN needs ON: equalities between the joined table's columns and columns of the tables before it (ON a.x = b.y)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.id = i.product_id JOIN order_items i ON i.order_id = o.id GROUP BY o.merchant_id",
                "reports/r.sql:1:72: the ON of `p` can use only `p` and the tables joined before it; `i` comes later",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.id = p.parent_id GROUP BY o.merchant_id",
                "reports/r.sql:1:65: each ON equality must compare a column of `p` with a column of a table joined before it; found `p.id = p.parent_id`",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products p ON p.id = product_id GROUP BY o.merchant_id",
                "reports/r.sql:1:72: qualify `product_id` in ON with its table or alias (t.product_id)",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN orders o2 ON o2.id = o.parent_id GROUP BY o.merchant_id",
                "reports/r.sql:1:51: table `orders` appears twice in FROM: a report reads each table once",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN products O ON O.id = o.product_id GROUP BY o.merchant_id",
                "reports/r.sql:1:51: `O` names two tables in FROM: give them distinct aliases",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM orders o JOIN (SELECT * FROM products) p ON p.id = o.product_id GROUP BY o.merchant_id",
                "reports/r.sql:1:52: subqueries are not supported in a report definition",
            ),
            (
                "SELECT o.merchant_id, COUNT(*) FROM order_items i LEFT JOIN orders o ON o.id = i.order_id GROUP BY o.merchant_id",
                "reports/r.sql:1:91: GROUP BY i.merchant_id, the tenant column of the first table in FROM, to key the report by merchant",
            ),
        ];
        assert_cases(&cases);
        let e = Report::parse(
            "r",
            "reports/r.sql",
            "SELECT o.merchant_id, COUNT(*) FROM orders o\n  LEFT JOIN coupons c ON c.id = o.coupon_id GROUP BY o.merchant_id",
            &shop(),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("reports/r.sql:2:13: table `coupons` is not captured: a report reads captured tables only (add it to [source] tables)")
        );
        let e = Report::parse(
            "r",
            "reports/r.sql",
            "SELECT i.merchant_id, COUNT(*) FROM order_items i JOIN orders o ON o.id = i.order_id JOIN products p ON p.id = i.product_id WHERE merchant_id > 0 GROUP BY 1",
            &shop(),
        )
        .err()
        .map(|e| e.to_string());
        assert_eq!(
            e.as_deref(),
            Some("reports/r.sql:1:131: column `merchant_id` is ambiguous: `i`, `o` and `p` all have it; qualify it (`i.merchant_id`)")
        );
    }
}
