//! The moving parts of the writer, one actor a file: the RabbitMQ link, one
//! writer per partition, the cache rebuilder and the change notifier.

pub mod amqp_link;
pub mod cache_rebuilder;
pub mod notifier;
pub mod partition_writer;

pub use amqp_link::{AmqpLink, LinkReceiver};
pub use cache_rebuilder::{CacheRebuilder, StaleCount};
pub use notifier::{Notifier, Notify};
pub use partition_writer::{PartitionStatuses, PartitionWriter, PartitionWriterConfig};
