//! `GET /v1/status`: every service with its instances, state and the alarms.

use crate::startup::AdminState;
use actix_web::{web, HttpResponse};

pub async fn fleet_status(state: web::Data<AdminState>) -> HttpResponse {
    HttpResponse::Ok().json(state.fleet_status())
}
