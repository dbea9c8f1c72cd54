//! The demo shop database and its change generator, shared by the end-to-end
//! tests, the benchmarks and the `mdp-loadgen` binary.
//!
//! - [`schema`]: DDL of the shop tables (`merchants`, `products`, `orders`,
//!   `order_items`) and helpers to create the database and count rows.
//! - [`workload`]: a seeded planner of realistic changes (order lifecycles,
//!   cart edits and hard deletes, late corrections of past days' orders),
//!   producing SQL statements without touching a database.
//! - [`runner`]: executes planned changes against MySQL with rate control and
//!   bounds on count and time.
//! - [`zipf`]: the skewed merchant popularity used by the planner.
//! - [`platform`]: the six services started as processes for one test or
//!   benchmark run, and the comparison of served rows with MariaDB's.
//! - [`oracle`]: every report recomputed by MariaDB over the source tables
//!   and compared with the query API.
//! - [`probe`]: freshness probe orders, committed and looked for end to end.
//! - [`chaos`]: a fault schedule (service kills, broker, cache and database
//!   restarts) run under load, with a per-fault report and the final verdict.

pub mod chaos;
pub mod oracle;
pub mod platform;
pub mod probe;
pub mod runner;
pub mod schema;
pub mod workload;
pub mod zipf;
