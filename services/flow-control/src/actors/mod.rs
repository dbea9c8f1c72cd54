//! The moving parts of flow-control, one actor per file:
//! [`intake`] consumes change queues, [`partition`] appends and cuts windows, [`publisher`] publishes them.

pub mod intake;
pub mod partition;
pub mod publisher;
