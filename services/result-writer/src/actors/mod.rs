//! The moving parts of the writer, one actor a file: the RabbitMQ link, one
//! writer per partition and the cache rebuilder.

pub mod amqp_link;
pub mod cache_rebuilder;
pub mod partition_writer;

pub use amqp_link::{AmqpLink, LinkReceiver};
pub use cache_rebuilder::{CacheRebuilder, StaleCount};
pub use partition_writer::{PartitionStatuses, PartitionWriter, PartitionWriterConfig};
