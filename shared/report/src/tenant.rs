//! Which tables are captured and which column holds the tenant (merchant
//! id) in each of them.

use std::collections::{BTreeMap, BTreeSet};

/// The tenant column of every captured table: `default` unless the table is
/// listed in `per_table` (e.g. `merchants` → `id`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantColumns {
    pub default: String,
    pub per_table: BTreeMap<String, String>,
    /// The captured tables (`[source] tables`); a report reading another
    /// table is rejected. `None` accepts any table.
    pub captured: Option<BTreeSet<String>>,
}

impl TenantColumns {
    /// From `[source] tenant_column` and `[source.tenant_columns]`.
    pub fn from_settings(s: &mdp_config::SourceSettings) -> Self {
        TenantColumns {
            default: s.tenant_column.clone(),
            per_table: s.tenant_columns.clone(),
            captured: Some(s.tables.iter().cloned().collect()),
        }
    }

    /// Every table uses `column`.
    pub fn uniform(column: &str) -> Self {
        TenantColumns {
            default: column.to_string(),
            per_table: BTreeMap::new(),
            captured: None,
        }
    }

    /// Whether `table` is captured (always true when the list is unknown).
    pub fn captures(&self, table: &str) -> bool {
        self.captured.as_ref().is_none_or(|c| c.contains(table))
    }

    /// The tenant column of `table`.
    pub fn of(&self, table: &str) -> &str {
        self.per_table
            .get(table)
            .map(String::as_str)
            .unwrap_or(&self.default)
    }
}

impl Default for TenantColumns {
    fn default() -> Self {
        TenantColumns::uniform("merchant_id")
    }
}
