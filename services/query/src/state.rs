//! What the handlers share: the report definitions and the rows service.

use crate::service::RowsService;
use mdp_report::ReportSet;
use std::sync::Arc;

/// Shared state of the query routes.
pub struct QueryState {
    pub reports: Arc<ReportSet>,
    pub rows: RowsService,
    /// Largest (and default) `limit`.
    pub page_size: usize,
    /// Number of partitions (to find a merchant's freshness).
    pub partitions: u32,
}
