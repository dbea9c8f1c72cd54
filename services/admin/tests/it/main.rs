//! Integration tests of admin against the local RabbitMQ: admin runs
//! in-process on port 0 with a random AMQP prefix; test instances publish
//! heartbeats and listen on the control exchange, and park messages in the
//! dead-letter queues. `TEST_LOG=1` prints logs.

mod alarms;
mod control;
mod dead_letters;
mod helpers;
mod status;
