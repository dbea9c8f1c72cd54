//! `GET /v1/writer`: per-partition applied window and backlog, cache rebuild
//! backlog and the state of both degrade machines.

use crate::actors::{PartitionStatuses, StaleCount};
use actix_web::{web, HttpResponse};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// What the status route reads.
#[derive(Clone)]
pub struct WriterStatusState {
    pub partitions: PartitionStatuses,
    pub stale: StaleCount,
}

#[derive(Serialize)]
struct PartitionView {
    consuming: bool,
    applied_window: i64,
    /// Batches received and not yet committed (unacknowledged).
    pending: usize,
    /// Of those, batches already written to Redis ahead of MySQL.
    cached_ahead: usize,
}

#[derive(Serialize)]
struct WriterView {
    partitions: BTreeMap<u32, PartitionView>,
    cache_stale_entries: i64,
    degrade: Vec<mdp_types::DegradeStatus>,
}

pub async fn writer_status(
    state: web::Data<WriterStatusState>,
    ctx: web::Data<mdp_service::ServiceContext>,
) -> HttpResponse {
    let partitions = state
        .partitions
        .snapshot()
        .into_iter()
        .map(|(p, s)| {
            (
                p,
                PartitionView {
                    consuming: s.consuming.load(Ordering::Relaxed),
                    applied_window: s.applied_window.load(Ordering::Relaxed),
                    pending: s.pending.load(Ordering::Relaxed),
                    cached_ahead: s.cached_ahead.load(Ordering::Relaxed),
                },
            )
        })
        .collect();
    HttpResponse::Ok().json(WriterView {
        partitions,
        cache_stale_entries: state.stale.get(),
        degrade: ctx.degrade.statuses(),
    })
}
