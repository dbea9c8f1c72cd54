//! `GET /v1/reports/{name}/rows`: one page of a report's rows for a merchant
//! (or for everyone, for reports not keyed by merchant) and a day range.
//!
//! Requests are not authenticated by this service yet; the handler parses
//! the request into [`RowsParams`] before anything is read, which is where a
//! caller extracted from `Authorization` would narrow the merchant.

use crate::domain::{page, PageToken, ParamError, RawRowsParams, RowsParams};
use crate::events::RequestTimer;
use crate::service::{Answer, LoadError};
use crate::state::QueryState;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use mdp_result_writer::layout::Freshness;
use mdp_types::{partition_of, TenantId};
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

/// Why a rows request failed.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("unknown report {0:?}")]
    UnknownReport(String),
    #[error("query string: {0}")]
    QueryString(String),
    #[error(transparent)]
    Param(#[from] ParamError),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl ResponseError for RowsError {
    fn status_code(&self) -> StatusCode {
        match self {
            RowsError::UnknownReport(_) => StatusCode::NOT_FOUND,
            RowsError::QueryString(_) | RowsError::Param(_) => StatusCode::BAD_REQUEST,
            RowsError::Load(LoadError::RateLimited { .. }) => StatusCode::TOO_MANY_REQUESTS,
            RowsError::Load(LoadError::Unavailable { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            RowsError::Load(LoadError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        if let RowsError::Load(LoadError::RateLimited { .. }) = self {
            response.insert_header(("Retry-After", "1"));
        }
        let mut body = json!({ "error": self.to_string() });
        if let RowsError::Param(p) = self {
            body["parameter"] = json!(p.param);
        }
        response.json(body)
    }
}

#[derive(Serialize)]
struct PartitionFreshness {
    window_id: u64,
    max_commit_ts_ms: i64,
    applied_at_ms: i64,
}

#[derive(Serialize)]
struct FreshnessView {
    /// Latest source commit time reflected by every partition involved, ms.
    as_of_ms: Option<i64>,
    /// Now minus `as_of_ms`.
    lag_ms: Option<i64>,
    partitions: BTreeMap<String, PartitionFreshness>,
}

#[derive(Serialize)]
struct RowsView<'a> {
    report: &'a str,
    rows: Vec<&'a crate::domain::OrderedObject>,
    served_by: &'static str,
    freshness: FreshnessView,
    degraded: serde_json::Value,
    next_page_token: Option<String>,
}

pub async fn report_rows(
    req: HttpRequest,
    name: web::Path<String>,
    state: web::Data<QueryState>,
    ctx: web::Data<mdp_service::ServiceContext>,
) -> HttpResponse {
    let timer = RequestTimer::start("rows");
    let response = match rows(&req, &name, &state, &ctx).await {
        Ok(r) => r,
        Err(e) => {
            if e.status_code().is_server_error() {
                tracing::warn!(report = %name.as_str(), error = %e, "rows request failed");
            }
            e.error_response()
        }
    };
    timer.finish(response.status());
    response
}

async fn rows(
    req: &HttpRequest,
    name: &str,
    state: &QueryState,
    ctx: &mdp_service::ServiceContext,
) -> Result<HttpResponse, RowsError> {
    let report = state
        .reports
        .get(name)
        .ok_or_else(|| RowsError::UnknownReport(name.chars().take(80).collect()))?;
    let pairs = web::Query::<Vec<(String, String)>>::from_query(req.query_string())
        .map_err(|e| RowsError::QueryString(e.to_string()))?
        .into_inner();
    let raw = RawRowsParams::from_pairs(pairs)?;
    let params = RowsParams::parse(&raw, report.as_ref().into(), state.page_size)?;
    let answer = state.rows.rows(report, &params).await?;
    Ok(HttpResponse::Ok().json(render(&report.name, &params, &answer, state, ctx)))
}

fn render<'a>(
    report: &'a str,
    params: &RowsParams,
    answer: &'a Answer,
    state: &QueryState,
    ctx: &mdp_service::ServiceContext,
) -> RowsView<'a> {
    let snapshot = &answer.snapshot;
    let (rows, next) = page(&snapshot.rows, params.after.as_ref(), params.limit.get());
    RowsView {
        report,
        rows: rows.iter().map(|r| &r.columns).collect(),
        served_by: answer.served_by.as_str(),
        freshness: freshness_view(
            &snapshot.freshness,
            params.merchant.as_ref().map(|m| m.as_str()),
            state.partitions,
            mdp_types::now_ms(),
        ),
        degraded: degraded_view(ctx, snapshot.partial),
        next_page_token: next.map(PageToken::encode),
    }
}

/// Freshness of the partitions an answer depends on: the merchant's
/// partition, or every partition for reports not keyed by merchant.
fn freshness_view(
    all: &BTreeMap<u32, Freshness>,
    merchant: Option<&str>,
    partitions: u32,
    now_ms: i64,
) -> FreshnessView {
    let relevant: Vec<(u32, &Freshness)> = match merchant {
        Some(m) => {
            let p = partition_of(&TenantId(m.to_string()), partitions);
            all.get(&p).map(|f| vec![(p, f)]).unwrap_or_default()
        }
        None => all.iter().map(|(p, f)| (*p, f)).collect(),
    };
    let as_of_ms = relevant.iter().map(|(_, f)| f.max_commit_ts_ms).min();
    FreshnessView {
        as_of_ms,
        lag_ms: as_of_ms.map(|t| now_ms.saturating_sub(t).max(0)),
        partitions: relevant
            .into_iter()
            .map(|(p, f)| {
                (
                    p.to_string(),
                    PartitionFreshness {
                        window_id: f.window_id,
                        max_commit_ts_ms: f.max_commit_ts_ms,
                        applied_at_ms: f.applied_at_ms,
                    },
                )
            })
            .collect(),
    }
}

/// `false`, or the active degradations (and whether rows may be missing).
fn degraded_view(ctx: &mdp_service::ServiceContext, partial: Option<&str>) -> serde_json::Value {
    let mut reasons: Vec<String> = ctx
        .degrade
        .statuses()
        .into_iter()
        .filter(|s| s.state != "normal")
        .map(|s| match s.reason {
            Some(reason) => format!("{} {}: {}", s.machine, s.state, reason),
            None => format!("{} {}", s.machine, s.state),
        })
        .collect();
    if let Some(p) = partial {
        reasons.push(format!("partial: {p}"));
    }
    if reasons.is_empty() {
        serde_json::Value::Bool(false)
    } else {
        json!({ "reasons": reasons, "partial": partial.is_some() })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn freshness_of_a_merchant_is_its_partition() {
        let mut all = BTreeMap::new();
        let p = partition_of(&TenantId("42".into()), 8);
        all.insert(
            p,
            Freshness {
                window_id: 9,
                max_commit_ts_ms: 1_000,
                applied_at_ms: 1_500,
            },
        );
        all.insert(
            (p + 1) % 8,
            Freshness {
                window_id: 3,
                max_commit_ts_ms: 500,
                applied_at_ms: 700,
            },
        );
        let v = freshness_view(&all, Some("42"), 8, 4_000);
        assert_eq!(v.as_of_ms, Some(1_000));
        assert_eq!(v.lag_ms, Some(3_000));
        assert_eq!(v.partitions.len(), 1);
        let v = freshness_view(&all, None, 8, 4_000);
        assert_eq!(v.as_of_ms, Some(500));
        assert_eq!(v.partitions.len(), 2);
        let v = freshness_view(&BTreeMap::new(), Some("42"), 8, 4_000);
        assert_eq!(v.as_of_ms, None);
        assert_eq!(v.lag_ms, None);
    }

    #[test]
    fn errors_map_to_statuses_naming_the_parameter() {
        let e = RowsError::Param(ParamError {
            param: "from",
            message: "x is not a date".into(),
        });
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        assert_eq!(e.to_string(), "from: x is not a date");
        assert_eq!(
            RowsError::UnknownReport("x".into()).status_code(),
            StatusCode::NOT_FOUND
        );
        let limited = RowsError::Load(LoadError::RateLimited { per_second: 5 });
        assert_eq!(limited.status_code(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(
            limited
                .error_response()
                .headers()
                .get("Retry-After")
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }
}
