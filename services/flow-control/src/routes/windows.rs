//! `GET /v1/windows?partition=N&limit=K`: the partition's latest windows from the index, newest first.

use super::{RouteError, RouteState};
use crate::log::{WindowRecord, WindowState};
use actix_web::{web, HttpResponse};
use mdp_types::WindowId;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 1000;

/// One window index entry as served.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowView {
    pub id: WindowId,
    pub state: WindowState,
    pub first_seq: u64,
    pub last_seq: u64,
    pub changes: u64,
    pub opened_at_ms: i64,
    pub sealed_at_ms: Option<i64>,
    pub published_at_ms: Option<i64>,
}

impl From<WindowRecord> for WindowView {
    fn from(r: WindowRecord) -> Self {
        WindowView {
            id: r.id,
            state: r.state,
            first_seq: r.first_seq,
            last_seq: r.last_seq,
            changes: r.changes(),
            opened_at_ms: r.opened_at_ms,
            sealed_at_ms: r.sealed_at_ms,
            published_at_ms: r.published_at_ms,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WindowsResponse {
    pub partition: u32,
    pub windows: Vec<WindowView>,
}

/// Parses `partition` (required, below P) and `limit` (1..=1000, default 20).
fn parse(query: &HashMap<String, String>, partitions: u32) -> Result<(u32, usize), RouteError> {
    let partition = match query.get("partition") {
        None => return Err(RouteError::BadParameter("partition is required".into())),
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|p| *p < partitions)
            .ok_or_else(|| {
                RouteError::BadParameter(format!(
                    "partition must be a number from 0 to {}",
                    partitions - 1
                ))
            })?,
    };
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(text) => text
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                RouteError::BadParameter(format!("limit must be a number from 1 to {MAX_LIMIT}"))
            })?,
    };
    Ok((partition, limit))
}

pub(super) async fn list_windows(
    state: web::Data<RouteState>,
    query: web::Query<HashMap<String, String>>,
) -> Result<HttpResponse, RouteError> {
    let (partition, limit) = parse(&query, state.board.partitions())?;
    let windows = state
        .log
        .latest_windows(partition, limit)
        .map_err(RouteError::Unavailable)?
        .into_iter()
        .map(WindowView::from)
        .collect();
    Ok(HttpResponse::Ok().json(WindowsResponse { partition, windows }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parameters_are_checked_and_named() {
        assert_eq!(
            parse(&q(&[("partition", "3")]), 8).ok(),
            Some((3, DEFAULT_LIMIT))
        );
        assert_eq!(
            parse(&q(&[("partition", "0"), ("limit", "5")]), 8).ok(),
            Some((0, 5))
        );
        let missing = parse(&q(&[]), 8).err().map(|e| e.to_string());
        assert_eq!(missing.as_deref(), Some("partition is required"));
        let too_big = parse(&q(&[("partition", "8")]), 8)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            too_big.as_deref(),
            Some("partition must be a number from 0 to 7")
        );
        let bad_limit = parse(&q(&[("partition", "1"), ("limit", "0")]), 8)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            bad_limit.as_deref(),
            Some("limit must be a number from 1 to 1000")
        );
    }
}
