//! `GET /v1/reports`: the reports this instance computes and the report
//! files it rejected at load.

use actix_web::{web, HttpResponse};
use mdp_report::{ColumnDef, ReportSet};
use serde::Serialize;
use std::sync::Arc;

#[derive(Serialize)]
struct ReportBody<'a> {
    name: &'a str,
    columns: &'a [ColumnDef],
    fact_table: &'a str,
    tables: &'a [String],
    /// Name of the tenant (merchant) column, when the report is keyed by merchant.
    tenant_column: Option<&'a str>,
    /// Name of the date key column, when the report has one.
    date_column: Option<&'a str>,
    sql: &'a str,
}

fn column_name(r: &mdp_report::Report, i: Option<usize>) -> Option<&str> {
    i.and_then(|i| r.columns.get(i)).map(|c| c.name.as_str())
}

#[derive(Serialize)]
struct RejectedBody {
    file: String,
    error: String,
}

#[derive(Serialize)]
struct ReportsBody<'a> {
    reports: Vec<ReportBody<'a>>,
    rejected: Vec<RejectedBody>,
}

pub async fn list(reports: web::Data<Arc<ReportSet>>) -> HttpResponse {
    let body = ReportsBody {
        reports: reports
            .reports()
            .iter()
            .map(|r| ReportBody {
                name: &r.name,
                columns: &r.columns,
                fact_table: &r.fact_table,
                tables: &r.tables,
                tenant_column: column_name(r, r.tenant_column),
                date_column: column_name(r, r.date_column),
                sql: &r.sql,
            })
            .collect(),
        rejected: reports
            .rejected()
            .iter()
            .map(|r| RejectedBody {
                file: r.file.display().to_string(),
                error: r.error.clone(),
            })
            .collect(),
    };
    HttpResponse::Ok().json(body)
}
