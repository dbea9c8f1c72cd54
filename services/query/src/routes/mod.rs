//! HTTP routes: one module per resource, plus the common service routes.

pub mod reports;
pub mod rows;

use actix_web::web;

/// Every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    mdp_service::common_routes(cfg);
    cfg.route("/v1/reports", web::get().to(reports::list_reports))
        .route("/v1/reports/{name}/rows", web::get().to(rows::report_rows));
}
