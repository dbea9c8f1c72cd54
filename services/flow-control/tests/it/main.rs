//! Integration tests of flow-control against the local RabbitMQ (random prefix per test).

mod helpers;
mod pipeline;
