//! Integration tests of mdp-report: loading a reports directory, and the
//! exactness of the incremental engine (one-table reports and reports with
//! joins) against a from-scratch recompute and against MariaDB running the
//! same SQL, and reports across merchants merged from per-partition
//! partial deltas.

mod across;
mod joins;
mod load_dir;
mod mariadb;
mod model;
mod recompute;
