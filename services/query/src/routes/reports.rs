//! `GET /v1/reports`: the loaded report definitions and the rejected ones.

use crate::events::RequestTimer;
use crate::state::QueryState;
use actix_web::{web, HttpResponse};
use mdp_report::ColumnRole;
use serde::Serialize;

#[derive(Serialize)]
struct ColumnView<'a> {
    name: &'a str,
    role: &'static str,
}

#[derive(Serialize)]
struct ReportView<'a> {
    name: &'a str,
    columns: Vec<ColumnView<'a>>,
    keyed_by_merchant: bool,
    date_column: Option<&'a str>,
}

#[derive(Serialize)]
struct RejectedView {
    file: String,
    error: String,
}

#[derive(Serialize)]
struct ReportsView<'a> {
    reports: Vec<ReportView<'a>>,
    rejected: Vec<RejectedView>,
}

pub async fn list_reports(state: web::Data<QueryState>) -> HttpResponse {
    let timer = RequestTimer::start("reports");
    let reports = state
        .reports
        .reports()
        .iter()
        .map(|r| ReportView {
            name: &r.name,
            columns: r
                .columns
                .iter()
                .map(|c| ColumnView {
                    name: &c.name,
                    role: match c.role {
                        ColumnRole::Key => "key",
                        ColumnRole::Value => "value",
                    },
                })
                .collect(),
            keyed_by_merchant: r.tenant_column.is_some(),
            date_column: r
                .date_column
                .and_then(|i| r.columns.get(i))
                .map(|c| c.name.as_str()),
        })
        .collect();
    let rejected = state
        .reports
        .rejected()
        .iter()
        .map(|r| RejectedView {
            file: r.file.display().to_string(),
            error: r.error.clone(),
        })
        .collect();
    let response = HttpResponse::Ok().json(ReportsView { reports, rejected });
    timer.finish(response.status());
    response
}
