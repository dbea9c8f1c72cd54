//! Integration tests of window-compute against the local RabbitMQ: each test
//! uses its own exchange/queue prefix and temp directories.

mod compute;
mod helpers;
mod hold;
