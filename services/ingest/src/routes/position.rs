//! `GET /v1/position`: the saved binlog position, what was read and
//! published, and the lag to the source's current end of binlog.

use crate::state::IngestState;
use actix_web::{web, HttpResponse};

pub async fn get_position(state: web::Data<IngestState>) -> HttpResponse {
    HttpResponse::Ok().json(state.report())
}
