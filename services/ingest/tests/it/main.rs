//! Integration tests of ingest against the binlog MariaDB started by
//! `scripts/source-db.sh` (started here if needed) and the local RabbitMQ.
//! Every test uses its own database, AMQP prefix and data directory.
//! `TEST_LOG=1` shows the service's logs.

mod helpers;
mod outage;
mod pipeline;
