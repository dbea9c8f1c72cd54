//! `GET /v1/partitions`: the partitions this instance owns (consumes) and
//! their progress.

use crate::board::{PartitionBoard, PartitionInfo};
use actix_web::{web, HttpResponse};
use mdp_service::ServiceContext;
use serde::Serialize;

#[derive(Serialize)]
struct PartitionsBody {
    instance: String,
    partitions: Vec<PartitionInfo>,
}

pub async fn list(
    ctx: web::Data<ServiceContext>,
    board: web::Data<PartitionBoard>,
) -> HttpResponse {
    let partitions = ctx
        .partitions
        .list()
        .into_iter()
        .map(|p| {
            board.get(p).unwrap_or(PartitionInfo {
                partition: p,
                ..PartitionInfo::default()
            })
        })
        .collect();
    HttpResponse::Ok().json(PartitionsBody {
        instance: ctx.instance.clone(),
        partitions,
    })
}
