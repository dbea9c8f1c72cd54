//! The error type of every AMQP operation in this crate.

/// Errors of connecting, declaring, publishing and acknowledging.
///
/// `Display` names the failed step; the broker or I/O cause is the `source`
/// (render both with `mdp_telemetry::error_chain`).
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The AMQP URL cannot be parsed; retrying cannot help.
    #[error("invalid AMQP URL: {0}")]
    InvalidUrl(String),
    /// Cancelled (shutdown) before the operation completed.
    #[error("cancelled before the AMQP connection was established")]
    Cancelled,
    /// A broker operation failed (channel closed, precondition failed, I/O…).
    #[error("failed to {op} {target}")]
    Broker {
        op: &'static str,
        target: String,
        #[source]
        source: lapin::Error,
    },
    /// A name, routing key or message id longer than AMQP's 255 bytes.
    #[error("{what} is {len} bytes, AMQP allows at most 255")]
    NameTooLong { what: &'static str, len: usize },
    /// The message body could not be serialised as JSON.
    #[error("failed to serialize the message body as JSON")]
    Serialize(#[source] serde_json::Error),
    /// The broker negatively confirmed a publish (the message is not stored).
    #[error("broker rejected the message published to {exchange} with routing key {routing_key}")]
    Nacked {
        exchange: String,
        routing_key: String,
    },
    /// A mandatory publish matched no queue and was returned.
    #[error("message published to {exchange} with routing key {routing_key} matched no queue")]
    Unroutable {
        exchange: String,
        routing_key: String,
    },
    /// The channel is not in confirm mode, so delivery cannot be guaranteed.
    #[error("publisher channel is not in confirm mode")]
    NotConfirmed,
    /// The delivery was already acknowledged, or its channel has closed (the
    /// broker will redeliver it).
    #[error("delivery {delivery_tag} was already settled or its channel is closed")]
    AlreadySettled { delivery_tag: u64 },
}

impl AmqpError {
    pub(crate) fn broker(
        op: &'static str,
        target: impl Into<String>,
        source: lapin::Error,
    ) -> Self {
        AmqpError::Broker {
            op,
            target: target.into(),
            source,
        }
    }

    /// Whether the connection or channel is gone (I/O error, missed heartbeats,
    /// connection-level broker error, closed channel): reconnect and build new
    /// publishers and consumers. A channel-level broker error (e.g. a failed
    /// declare) closes that channel too; the next operation on it reports
    /// `true` here.
    pub fn is_connection_lost(&self) -> bool {
        match self {
            AmqpError::Broker { source, .. } => {
                matches!(
                    source.kind(),
                    lapin::ErrorKind::InvalidChannelState(..)
                        | lapin::ErrorKind::InvalidConnectionState(..)
                        | lapin::ErrorKind::IOError(..)
                        | lapin::ErrorKind::MissingHeartbeatError
                        | lapin::ErrorKind::RuntimeShutdownError(..)
                ) || matches!(
                    source.kind(),
                    lapin::ErrorKind::ProtocolError(e)
                        if matches!(e.kind(), lapin::protocol::AMQPErrorKind::Hard(_))
                )
            }
            AmqpError::AlreadySettled { .. } => true,
            _ => false,
        }
    }
}

/// Checks an AMQP short string (names, routing keys, ids) without panicking.
pub(crate) fn short(what: &'static str, s: &str) -> Result<lapin::types::ShortString, AmqpError> {
    lapin::types::ShortString::try_new(s).map_err(|_| AmqpError::NameTooLong { what, len: s.len() })
}
