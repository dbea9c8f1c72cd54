//! One validated report definition: its columns, key, tables and compiled plan.

use crate::compile::{self, Plan};
use crate::error::DefinitionError;
use crate::tenant::TenantColumns;
use serde::{Deserialize, Serialize};

/// Whether a report column is part of the row's identity (a GROUP BY
/// expression) or a computed value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnRole {
    Key,
    Value,
}

/// One output column of a report, in select order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ColumnDef {
    /// The select alias, or MySQL's default name (the expression text; the
    /// column name for a plain column reference).
    pub name: String,
    pub role: ColumnRole,
}

/// A validated report definition.
#[derive(Debug)]
pub struct Report {
    /// Report name: the SQL file name without `.sql`.
    pub name: String,
    /// The SQL text as written.
    pub sql: String,
    /// Output columns in select order.
    pub columns: Vec<ColumnDef>,
    /// The table in FROM (without schema qualifier).
    pub fact_table: String,
    /// Every source table the report reads (the fact table first).
    pub tables: Vec<String>,
    /// Index in `columns` of the fact table's tenant column (the report is
    /// keyed by merchant).
    pub tenant_column: Option<usize>,
    /// Index in `columns` of the first GROUP BY expression of DATE type.
    pub date_column: Option<usize>,
    pub(crate) plan: Plan,
}

impl Report {
    /// Parses and validates one report definition. `file` labels error
    /// messages (usually the path of the SQL file).
    pub fn parse(
        name: &str,
        file: &str,
        sql: &str,
        tenants: &TenantColumns,
    ) -> Result<Report, DefinitionError> {
        let compiled = compile::compile(file, sql, tenants)?;
        Ok(Report {
            name: name.to_string(),
            sql: sql.to_string(),
            columns: compiled.columns,
            fact_table: compiled.fact_table,
            tables: compiled
                .plan
                .relations
                .iter()
                .map(|r| r.table.clone())
                .collect(),
            tenant_column: compiled.tenant_column,
            date_column: compiled.date_column,
            plan: compiled.plan,
        })
    }

    /// Number of GROUP BY expressions (the length of `ResultRow::key`).
    pub fn key_len(&self) -> usize {
        self.plan.group_exprs.len()
    }

    /// Whether the report joins tables (and so needs row state).
    pub fn has_joins(&self) -> bool {
        !self.plan.joins.is_empty()
    }

    /// Whether the report reads `table`.
    pub fn reads(&self, table: &str) -> bool {
        self.tables.iter().any(|t| t == table)
    }
}
