//! Names and declaration of every exchange and queue of the platform, all
//! derived from one prefix so installations (and tests) can share a broker.

use crate::error::{short, AmqpError};
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, ExchangeKind};
use std::fmt;

/// A pipeline stage with per-partition queues and a dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    /// `ChangeBatch` messages from ingest to flow-control.
    Changes,
    /// `Window` messages from flow-control to window-compute.
    Windows,
    /// `ResultBatch` messages from window-compute to result-writer.
    Results,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 3] = [Stage::Changes, Stage::Windows, Stage::Results];

    /// `changes`, `windows` or `results`: the name part of exchanges and
    /// queues, and the dead-letter routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Changes => "changes",
            Stage::Windows => "windows",
            Stage::Results => "results",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The exchanges and queues of one installation.
///
/// Exchanges (durable): direct `{prefix}.changes|windows|results`, fanout
/// `{prefix}.heartbeats|control|notices`, direct `{prefix}.dlx`. Per stage and
/// partition a durable quorum queue `{prefix}.{stage}.{p}` with single active
/// consumer, bound with routing key `p`, dead-lettering to the dlx with
/// routing key `{stage}` into the quorum queue `{prefix}.dlq.{stage}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    pub prefix: String,
    pub partitions: u32,
}

impl Topology {
    pub fn new(prefix: &str, partitions: u32) -> Self {
        Topology {
            prefix: prefix.to_string(),
            partitions,
        }
    }

    /// Prefix from `rabbitmq.prefix`, partitions from `partitioning.partitions`.
    pub fn from_settings(s: &mdp_config::Settings) -> Self {
        Topology::new(&s.rabbitmq.prefix, s.partitioning.partitions)
    }

    pub fn changes_exchange(&self) -> String {
        self.stage_exchange(Stage::Changes)
    }
    pub fn windows_exchange(&self) -> String {
        self.stage_exchange(Stage::Windows)
    }
    pub fn results_exchange(&self) -> String {
        self.stage_exchange(Stage::Results)
    }
    pub fn heartbeats_exchange(&self) -> String {
        format!("{}.heartbeats", self.prefix)
    }
    pub fn control_exchange(&self) -> String {
        format!("{}.control", self.prefix)
    }
    /// Fanout exchange on which result-writer says which report rows a
    /// committed batch changed (readers drop what they cached of them).
    pub fn notices_exchange(&self) -> String {
        format!("{}.notices", self.prefix)
    }
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dlx", self.prefix)
    }

    /// The direct exchange of `stage`: `{prefix}.{stage}`.
    pub fn stage_exchange(&self, stage: Stage) -> String {
        format!("{}.{}", self.prefix, stage)
    }

    /// The queue of `stage` for partition `p`: `{prefix}.{stage}.{p}`.
    pub fn stage_queue(&self, stage: Stage, p: u32) -> String {
        format!("{}.{}.{}", self.prefix, stage, p)
    }

    pub fn changes_queue(&self, p: u32) -> String {
        self.stage_queue(Stage::Changes, p)
    }
    pub fn windows_queue(&self, p: u32) -> String {
        self.stage_queue(Stage::Windows, p)
    }
    pub fn results_queue(&self, p: u32) -> String {
        self.stage_queue(Stage::Results, p)
    }

    /// `{prefix}.dlq.{stage}`.
    pub fn dead_letter_queue(&self, stage: Stage) -> String {
        format!("{}.dlq.{}", self.prefix, stage)
    }

    /// The routing key of partition `p`: its number as text.
    pub fn routing_key(p: u32) -> String {
        p.to_string()
    }

    /// Every exchange with its kind, in declaration order.
    pub fn exchanges(&self) -> Vec<(String, ExchangeKind)> {
        vec![
            (self.dead_letter_exchange(), ExchangeKind::Direct),
            (self.changes_exchange(), ExchangeKind::Direct),
            (self.windows_exchange(), ExchangeKind::Direct),
            (self.results_exchange(), ExchangeKind::Direct),
            (self.heartbeats_exchange(), ExchangeKind::Fanout),
            (self.control_exchange(), ExchangeKind::Fanout),
            (self.notices_exchange(), ExchangeKind::Fanout),
        ]
    }

    /// Every queue name: dead-letter queues, then partition queues per stage.
    pub fn queues(&self) -> Vec<String> {
        let mut names: Vec<String> = Stage::ALL
            .iter()
            .map(|s| self.dead_letter_queue(*s))
            .collect();
        for stage in Stage::ALL {
            names.extend((0..self.partitions).map(|p| self.stage_queue(stage, p)));
        }
        names
    }

    /// The arguments of a partition queue of `stage`. Redeclaring a queue with
    /// different arguments fails (PRECONDITION_FAILED), so they live here only.
    pub fn partition_queue_arguments(&self, stage: Stage) -> FieldTable {
        let mut args = quorum_arguments();
        args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        args.insert(
            "x-dead-letter-exchange".into(),
            AMQPValue::LongString(LongString::from(self.dead_letter_exchange())),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            AMQPValue::LongString(LongString::from(stage.as_str())),
        );
        args
    }

    /// Declares every exchange, dead-letter queue and partition queue and
    /// their bindings. Idempotent; fails if an existing one differs.
    #[tracing::instrument(skip_all, fields(prefix = %self.prefix, partitions = self.partitions))]
    pub async fn declare(&self, ch: &Channel) -> Result<(), AmqpError> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in self.exchanges() {
            ch.exchange_declare(
                short("exchange name", &name)?,
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|e| AmqpError::broker("declare exchange", &name, e))?;
        }
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        let dlx = short("exchange name", &self.dead_letter_exchange())?;
        for stage in Stage::ALL {
            let dlq = self.dead_letter_queue(stage);
            ch.queue_declare(short("queue name", &dlq)?, queue_opts, quorum_arguments())
                .await
                .map_err(|e| AmqpError::broker("declare queue", &dlq, e))?;
            ch.queue_bind(
                short("queue name", &dlq)?,
                dlx.clone(),
                stage.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| AmqpError::broker("bind queue", &dlq, e))?;
        }
        for stage in Stage::ALL {
            let exchange = short("exchange name", &self.stage_exchange(stage))?;
            let args = self.partition_queue_arguments(stage);
            for p in 0..self.partitions {
                let queue = self.stage_queue(stage, p);
                ch.queue_declare(short("queue name", &queue)?, queue_opts, args.clone())
                    .await
                    .map_err(|e| AmqpError::broker("declare queue", &queue, e))?;
                ch.queue_bind(
                    short("queue name", &queue)?,
                    exchange.clone(),
                    Self::routing_key(p).into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|e| AmqpError::broker("bind queue", &queue, e))?;
            }
        }
        tracing::info!(
            exchanges = 6,
            queues = 3 + 3 * self.partitions,
            "amqp topology declared"
        );
        Ok(())
    }
}

fn quorum_arguments() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    args
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::headers::table_str;

    #[test]
    fn names_follow_the_contract() {
        let t = Topology::new("mdp", 4);
        assert_eq!(t.changes_exchange(), "mdp.changes");
        assert_eq!(t.windows_exchange(), "mdp.windows");
        assert_eq!(t.results_exchange(), "mdp.results");
        assert_eq!(t.heartbeats_exchange(), "mdp.heartbeats");
        assert_eq!(t.control_exchange(), "mdp.control");
        assert_eq!(t.dead_letter_exchange(), "mdp.dlx");
        assert_eq!(t.changes_queue(3), "mdp.changes.3");
        assert_eq!(t.windows_queue(0), "mdp.windows.0");
        assert_eq!(t.results_queue(1), "mdp.results.1");
        assert_eq!(t.dead_letter_queue(Stage::Changes), "mdp.dlq.changes");
        assert_eq!(t.dead_letter_queue(Stage::Windows), "mdp.dlq.windows");
        assert_eq!(t.dead_letter_queue(Stage::Results), "mdp.dlq.results");
        assert_eq!(Topology::routing_key(12), "12");
    }

    #[test]
    fn lists_every_exchange_and_queue() {
        let t = Topology::new("x", 2);
        let exchanges: Vec<String> = t.exchanges().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            exchanges,
            [
                "x.dlx",
                "x.changes",
                "x.windows",
                "x.results",
                "x.heartbeats",
                "x.control",
                "x.notices"
            ]
        );
        assert_eq!(
            t.queues(),
            [
                "x.dlq.changes",
                "x.dlq.windows",
                "x.dlq.results",
                "x.changes.0",
                "x.changes.1",
                "x.windows.0",
                "x.windows.1",
                "x.results.0",
                "x.results.1"
            ]
        );
        let fanouts = t
            .exchanges()
            .into_iter()
            .filter(|(_, k)| *k == ExchangeKind::Fanout)
            .count();
        assert_eq!(fanouts, 3);
    }

    #[test]
    fn partition_queues_are_quorum_single_consumer_and_dead_lettered() {
        let t = Topology::new("mdp", 1);
        let args = t.partition_queue_arguments(Stage::Windows);
        assert_eq!(table_str(&args, "x-queue-type"), Some("quorum"));
        assert_eq!(table_str(&args, "x-dead-letter-exchange"), Some("mdp.dlx"));
        assert_eq!(
            table_str(&args, "x-dead-letter-routing-key"),
            Some("windows")
        );
        assert_eq!(
            args.inner().get("x-single-active-consumer"),
            Some(&AMQPValue::Boolean(true))
        );
    }

    #[test]
    fn from_settings_uses_prefix_and_partitions() {
        let s = mdp_config::Settings::load_from(None, Vec::<(String, String)>::new())
            .expect("defaults load");
        let t = Topology::from_settings(&s);
        assert_eq!(t.prefix, s.rabbitmq.prefix);
        assert_eq!(t.partitions, s.partitioning.partitions);
    }
}
