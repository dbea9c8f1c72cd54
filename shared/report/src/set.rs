//! The set of reports loaded from the reports directory.

use crate::error::ReportError;
use crate::report::Report;
use crate::tenant::TenantColumns;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A report file that was not accepted, with the reason
/// (`file:line:column: message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedReport {
    pub file: PathBuf,
    pub error: String,
}

/// The valid reports of a directory, sorted by name, and the rejected files.
#[derive(Debug, Default)]
pub struct ReportSet {
    reports: Vec<Arc<Report>>,
    rejected: Vec<RejectedReport>,
}

impl ReportSet {
    /// Loads every `*.sql` in `dir` (file stem = report name, must match
    /// `[a-z0-9_]+`). Valid reports are kept; each invalid one is returned in
    /// [`ReportSet::rejected`] with a message naming the file, line:column and
    /// what is unsupported. Fails only if the directory cannot be read.
    pub fn load_dir(dir: &Path, tenants: &TenantColumns) -> Result<ReportSet, ReportError> {
        let read_err = |source| ReportError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_err)? {
            let path = entry.map_err(read_err)?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("sql") && path.is_file() {
                files.push(path);
            }
        }
        files.sort();
        let mut set = ReportSet::default();
        for path in files {
            let label = path.display().to_string();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if !valid_name(&name) {
                set.reject(
                    path,
                    format!("{label}:0:0: report name {name:?} must match [a-z0-9_]+"),
                );
                continue;
            }
            let sql = match std::fs::read_to_string(&path) {
                Ok(sql) => sql,
                Err(e) => {
                    set.reject(path, format!("{label}:0:0: cannot read the file: {e}"));
                    continue;
                }
            };
            match Report::parse(&name, &label, &sql, tenants) {
                Ok(report) => set.reports.push(Arc::new(report)),
                Err(e) => set.reject(path, e.to_string()),
            }
        }
        tracing::info!(
            dir = %dir.display(),
            loaded = set.reports.len(),
            rejected = set.rejected.len(),
            "reports loaded"
        );
        Ok(set)
    }

    /// A set made of already parsed reports (sorted by name; a later report
    /// with the same name replaces an earlier one).
    pub fn from_reports(reports: impl IntoIterator<Item = Report>) -> ReportSet {
        let mut all: Vec<Arc<Report>> = Vec::new();
        for r in reports {
            all.retain(|x| x.name != r.name);
            all.push(Arc::new(r));
        }
        all.sort_by(|a, b| a.name.cmp(&b.name));
        ReportSet {
            reports: all,
            rejected: Vec::new(),
        }
    }

    fn reject(&mut self, file: PathBuf, error: String) {
        tracing::warn!(file = %file.display(), error = %error, "report rejected");
        self.rejected.push(RejectedReport { file, error });
    }

    /// The valid reports, sorted by name.
    pub fn reports(&self) -> &[Arc<Report>] {
        &self.reports
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Report>> {
        self.reports.iter().find(|r| r.name == name)
    }

    /// Files that were not accepted, with the reason.
    pub fn rejected(&self) -> &[RejectedReport] {
        &self.rejected
    }

    /// Source tables any report reads.
    pub fn tables(&self) -> BTreeSet<String> {
        self.reports
            .iter()
            .flat_map(|r| r.tables.iter().cloned())
            .collect()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
