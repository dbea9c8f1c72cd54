//! `GET /v1/partitions`: per partition its position, log seq, open window, last sealed window and publish lag.

use super::RouteState;
use crate::status::PartitionStatus;
use actix_web::{web, HttpResponse};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct PartitionsResponse {
    pub partitions: Vec<PartitionStatus>,
}

pub(super) async fn list_partitions(state: web::Data<RouteState>) -> HttpResponse {
    let now = mdp_types::now_ms();
    let partitions = (0..state.board.partitions())
        .filter_map(|p| state.board.snapshot(p, state.owned.contains(p), now))
        .collect();
    HttpResponse::Ok().json(PartitionsResponse { partitions })
}
