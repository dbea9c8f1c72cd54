//! Integration tests of the service runtime: the common routes in-process and
//! the heartbeat actor against the local RabbitMQ (random prefix per test).
//! `TEST_LOG=1` prints the logs.

mod heartbeat;
mod helpers;
mod routes;
