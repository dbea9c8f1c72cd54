//! query: the HTTP API merchants read their reports from.
//!
//! `GET /v1/reports` lists the report definitions; `GET
//! /v1/reports/{name}/rows` serves one merchant's rows (Redis hash first,
//! MySQL table when Redis misses or is down) through a short-lived
//! in-process cache that result-writer's change notices empty as soon as
//! the rows change, with freshness and the active degradations in every
//! answer.

pub mod configuration;
pub mod domain;
pub mod events;
pub mod notices;
pub mod routes;
pub mod service;
pub mod sources;
pub mod startup;
pub mod state;

pub use configuration::SERVICE;
pub use startup::{Application, StartupError};
