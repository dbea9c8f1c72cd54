//! Integration tests of admin against the local RabbitMQ: admin runs
//! in-process on port 0 with a random AMQP prefix; test instances publish
//! heartbeats and listen on the control exchange. `TEST_LOG=1` prints logs.

mod control;
mod helpers;
mod status;
