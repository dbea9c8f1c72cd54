//! Dead-lettered (parked) messages: the requests of the dead-letter routes
//! validated (stage, limit), where a parked message came from, the headers
//! it is replayed with, and how many messages each dead-letter queue held
//! when last looked at (for the `dead_letters_parked` alarm).
//!
//! Almost every message the services park reaches a dead-letter queue by
//! being rejected without requeue from a partition queue
//! (`mdp_amqp::dead_letter`: malformed, oversize or wrong-partition
//! messages, window-compute's poison windows). The broker then routes it
//! through `{prefix}.dlx` and adds an `x-death` header whose newest entry
//! names the queue it died in and the exchange and routing keys it had been
//! published with. window-compute parks a window it had kept in a held
//! partition's store (there is no delivery to reject) by publishing a copy
//! to `{prefix}.dlx` with `x-mdp-origin-*` headers naming the same three
//! (`mdp_types::status::dead_letter`). ingest publishes rows without a
//! tenant value straight to `{prefix}.dlx`: those never were in a partition
//! queue, carry neither, and are not replayed.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use mdp_amqp::{Stage, Topology};
use mdp_types::status::dead_letter::{
    ORIGIN_EXCHANGE_HEADER, ORIGIN_QUEUE_HEADER, ORIGIN_ROUTING_KEY_HEADER, REASON_HEADER,
};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Messages examined by one replay when `limit` is not given.
pub const DEFAULT_REPLAY_LIMIT: u32 = 100;
/// The highest accepted `limit`.
pub const MAX_REPLAY_LIMIT: u32 = 10_000;
/// Header counting how many times a message was replayed.
pub const REPLAYS_HEADER: &str = "x-mdp-replays";
/// Header naming the replay call that republished a message last.
pub const REPLAY_ID_HEADER: &str = "x-mdp-replay-id";

/// Headers the broker sets on dead-lettering or redelivery, and those a
/// service sets when it parks a copy itself; a replayed message starts
/// without them.
const BROKER_HEADERS: [&str; 12] = [
    ORIGIN_QUEUE_HEADER,
    ORIGIN_EXCHANGE_HEADER,
    ORIGIN_ROUTING_KEY_HEADER,
    REASON_HEADER,
    "x-death",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-first-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-last-death-exchange",
    "x-delivery-count",
];

/// A rejected request; `Display` starts with the parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("stage: {0}")]
    Stage(String),
    #[error("limit: {0}")]
    Limit(String),
    #[error(transparent)]
    Param(#[from] mdp_service::ParamError),
    #[error("query: {0}")]
    Query(String),
}

/// `changes`, `windows` or `results`.
pub fn parse_stage(value: &str) -> Result<Stage, RequestError> {
    Stage::ALL
        .into_iter()
        .find(|s| s.as_str() == value)
        .ok_or_else(|| {
            RequestError::Stage(format!(
                "unknown stage '{value}' (expected changes, windows or results)"
            ))
        })
}

/// The `limit` of a replay from the query parameters: 1 to
/// [`MAX_REPLAY_LIMIT`], [`DEFAULT_REPLAY_LIMIT`] when absent.
pub fn parse_replay_limit(params: &[(String, String)]) -> Result<u32, RequestError> {
    let Some(value) = mdp_service::single_param(params, "limit")? else {
        return Ok(DEFAULT_REPLAY_LIMIT);
    };
    let range = || format!("must be between 1 and {MAX_REPLAY_LIMIT}");
    match value.trim().parse::<u64>() {
        Ok(n) if (1..=u64::from(MAX_REPLAY_LIMIT)).contains(&n) => {
            u32::try_from(n).map_err(|_| RequestError::Limit(range()))
        }
        Ok(n) => Err(RequestError::Limit(format!("{n} {}", range()))),
        Err(_) => Err(RequestError::Limit(format!(
            "'{value}' is not a whole number ({})",
            range()
        ))),
    }
}

/// Where a parked message is sent back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The partition queue it was dead-lettered from.
    pub queue: String,
    /// The exchange and routing key it had been published with.
    pub exchange: String,
    pub routing_key: String,
}

/// Why a parked message was left in its dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SkipReason {
    /// Neither `x-death` nor `x-mdp-origin-*` headers: published to the
    /// dead-letter exchange directly without an origin.
    NoDeathHeader,
    /// An `x-death` header without queue, exchange or routing key, or an
    /// incomplete set of `x-mdp-origin-*` headers.
    MalformedDeathHeader,
    /// Dead-lettered from a queue that is not a partition queue of the stage.
    ForeignQueue,
    /// The broker returned the republished message: nothing is bound for it.
    Unroutable,
    /// The broker refused (nacked) the republished message.
    Refused,
    /// Replayed by this very call and dead-lettered again meanwhile.
    DeadLetteredAgain,
}

impl SkipReason {
    /// A short fixed label for the response and the log.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::NoDeathHeader => "no_x_death",
            SkipReason::MalformedDeathHeader => "malformed_x_death",
            SkipReason::ForeignQueue => "foreign_queue",
            SkipReason::Unroutable => "unroutable",
            SkipReason::Refused => "refused",
            SkipReason::DeadLetteredAgain => "dead_lettered_again",
        }
    }
}

fn text(value: &AMQPValue) -> Option<&str> {
    match value {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

fn integer(value: &AMQPValue) -> Option<i64> {
    match *value {
        AMQPValue::ShortShortInt(v) => Some(v.into()),
        AMQPValue::ShortShortUInt(v) => Some(v.into()),
        AMQPValue::ShortInt(v) => Some(v.into()),
        AMQPValue::ShortUInt(v) => Some(v.into()),
        AMQPValue::LongInt(v) => Some(v.into()),
        AMQPValue::LongUInt(v) => Some(v.into()),
        AMQPValue::LongLongInt(v) => Some(v),
        _ => None,
    }
}

/// The origin a service wrote on a copy it parked itself.
fn parked_origin(headers: Option<&FieldTable>) -> Result<Origin, SkipReason> {
    let field = |name: &str| headers.and_then(|h| h.inner().get(name)).and_then(text);
    match (
        field(ORIGIN_QUEUE_HEADER),
        field(ORIGIN_EXCHANGE_HEADER),
        field(ORIGIN_ROUTING_KEY_HEADER),
    ) {
        (None, None, None) => Err(SkipReason::NoDeathHeader),
        (Some(queue), Some(exchange), Some(routing_key)) => Ok(Origin {
            queue: queue.to_string(),
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
        }),
        _ => Err(SkipReason::MalformedDeathHeader),
    }
}

/// Where the message with `headers`, parked in the dead-letter queue of
/// `stage`, came from: the newest `x-death` entry or, without one, the
/// `x-mdp-origin-*` headers; either must name a partition queue of that
/// stage.
pub fn origin(
    headers: Option<&FieldTable>,
    topology: &Topology,
    stage: Stage,
) -> Result<Origin, SkipReason> {
    let Some(deaths) = headers.and_then(|h| h.inner().get("x-death")) else {
        let origin = parked_origin(headers)?;
        if !(0..topology.partitions).any(|p| topology.stage_queue(stage, p) == origin.queue) {
            return Err(SkipReason::ForeignQueue);
        }
        return Ok(origin);
    };
    let AMQPValue::FieldArray(deaths) = deaths else {
        return Err(SkipReason::MalformedDeathHeader);
    };
    // The broker keeps the newest death first.
    let Some(AMQPValue::FieldTable(newest)) = deaths.as_slice().first() else {
        return Err(SkipReason::MalformedDeathHeader);
    };
    let field = |name: &str| newest.inner().get(name).and_then(text);
    let (Some(queue), Some(exchange)) = (field("queue"), field("exchange")) else {
        return Err(SkipReason::MalformedDeathHeader);
    };
    let routing_key = match newest.inner().get("routing-keys") {
        Some(AMQPValue::FieldArray(keys)) => keys.as_slice().first().and_then(text),
        _ => None,
    }
    .ok_or(SkipReason::MalformedDeathHeader)?;
    if !(0..topology.partitions).any(|p| topology.stage_queue(stage, p) == queue) {
        return Err(SkipReason::ForeignQueue);
    }
    Ok(Origin {
        queue: queue.to_string(),
        exchange: exchange.to_string(),
        routing_key: routing_key.to_string(),
    })
}

/// Whether the message was last republished by the replay `replay_id`.
pub fn replayed_by(headers: Option<&FieldTable>, replay_id: &str) -> bool {
    headers
        .and_then(|h| h.inner().get(REPLAY_ID_HEADER))
        .and_then(text)
        == Some(replay_id)
}

/// The headers a message is republished with: its own without the broker's
/// dead-lettering headers, with [`REPLAYS_HEADER`] counted up and
/// [`REPLAY_ID_HEADER`] set to `replay_id`.
pub fn replay_headers(headers: Option<&FieldTable>, replay_id: &str) -> FieldTable {
    let mut kept: BTreeMap<ShortString, AMQPValue> =
        headers.map(|h| h.inner().clone()).unwrap_or_default();
    let replays = kept
        .get(REPLAYS_HEADER)
        .and_then(integer)
        .unwrap_or(0)
        .saturating_add(1);
    kept.retain(|name, _| !BROKER_HEADERS.contains(&name.as_str()));
    kept.insert(REPLAYS_HEADER.into(), AMQPValue::LongLongInt(replays));
    kept.insert(
        REPLAY_ID_HEADER.into(),
        AMQPValue::LongString(LongString::from(replay_id)),
    );
    FieldTable::from(kept)
}

/// The service that consumes a stage's partition queues, named in alarms
/// about the stage's dead-letter queue.
pub fn consuming_service(stage: Stage) -> &'static str {
    match stage {
        Stage::Changes => "flow-control",
        Stage::Windows => "window-compute",
        Stage::Results => "result-writer",
    }
}

/// One dead-letter queue as last looked at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeadLetterDepth {
    pub stage: &'static str,
    pub queue: String,
    /// Ready messages at the last look.
    pub messages: u64,
    /// Since when the queue has held messages without being seen empty, ms
    /// since epoch.
    pub parked_since_ms: Option<i64>,
    /// When admin last looked, ms since epoch.
    pub checked_at_ms: i64,
}

/// The depth of every dead-letter queue as last looked at. Cheap to clone;
/// clones share it.
#[derive(Debug, Clone, Default)]
pub struct DeadLetterWatch {
    depths: Arc<Mutex<BTreeMap<Stage, DeadLetterDepth>>>,
}

impl DeadLetterWatch {
    /// Records that `queue` (of `stage`) holds `messages` at `now_ms`.
    pub fn record(&self, stage: Stage, queue: &str, messages: u64, now_ms: i64) {
        let mut depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        let since = depths.get(&stage).and_then(|d| d.parked_since_ms);
        depths.insert(
            stage,
            DeadLetterDepth {
                stage: stage.as_str(),
                queue: queue.to_string(),
                messages,
                parked_since_ms: (messages > 0).then(|| since.unwrap_or(now_ms)),
                checked_at_ms: now_ms,
            },
        );
    }

    /// The queue of `stage` does not exist (nothing parked there).
    pub fn forget(&self, stage: Stage) {
        let mut depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        depths.remove(&stage);
    }

    /// Every queue looked at, in stage order.
    pub fn snapshot(&self) -> Vec<DeadLetterDepth> {
        let depths = self.depths.lock().unwrap_or_else(|p| p.into_inner());
        depths.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn topology() -> Topology {
        Topology::new("mdp", 4)
    }

    fn long(s: &str) -> AMQPValue {
        AMQPValue::LongString(LongString::from(s))
    }

    /// Headers as the broker sets them when `queue` rejects a message
    /// published to `exchange` with `routing_key`.
    fn dead(queue: &str, exchange: &str, routing_key: &str) -> FieldTable {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        death.insert("reason".into(), long("rejected"));
        death.insert("queue".into(), long(queue));
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        death.insert("exchange".into(), long(exchange));
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![long(routing_key)])),
        );
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        headers.insert("x-first-death-queue".into(), long(queue));
        headers.insert("x-first-death-reason".into(), long("rejected"));
        headers.insert("x-first-death-exchange".into(), long(exchange));
        headers.insert("traceparent".into(), long("00-aa-bb-01"));
        headers
    }

    fn params(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn stages_are_parsed_by_name() {
        assert_eq!(parse_stage("windows"), Ok(Stage::Windows));
        assert_eq!(parse_stage("changes"), Ok(Stage::Changes));
        assert_eq!(
            parse_stage("dlq").map_err(|e| e.to_string()),
            Err("stage: unknown stage 'dlq' (expected changes, windows or results)".into())
        );
    }

    #[test]
    fn the_limit_defaults_and_is_bounded() {
        assert_eq!(parse_replay_limit(&[]), Ok(DEFAULT_REPLAY_LIMIT));
        assert_eq!(parse_replay_limit(&params(&[("limit", "1")])), Ok(1));
        assert_eq!(
            parse_replay_limit(&params(&[("limit", "10000")])),
            Ok(10_000)
        );
        let err = |p: &[(&str, &str)]| parse_replay_limit(&params(p)).map_err(|e| e.to_string());
        assert_eq!(
            err(&[("limit", "0")]),
            Err("limit: 0 must be between 1 and 10000".into())
        );
        assert_eq!(
            err(&[("limit", "10001")]),
            Err("limit: 10001 must be between 1 and 10000".into())
        );
        assert_eq!(
            err(&[("limit", "-3")]),
            Err("limit: '-3' is not a whole number (must be between 1 and 10000)".into())
        );
        assert_eq!(
            err(&[("limit", "99999999999999999999999")]),
            Err("limit: '99999999999999999999999' is not a whole number (must be between 1 and 10000)".into())
        );
        assert_eq!(
            err(&[("limit", "1"), ("limit", "2")]),
            Err("limit: given more than once".into())
        );
        assert_eq!(
            err(&[("limt", "5")]),
            Err("limt: unknown parameter (expected limit)".into())
        );
    }

    #[test]
    fn the_origin_is_the_newest_death_of_a_partition_queue_of_the_stage() {
        let t = topology();
        let h = dead("mdp.windows.3", "mdp.windows", "3");
        assert_eq!(
            origin(Some(&h), &t, Stage::Windows),
            Ok(Origin {
                queue: "mdp.windows.3".into(),
                exchange: "mdp.windows".into(),
                routing_key: "3".into(),
            })
        );
        // Published to the queue through the default exchange.
        let h = dead("mdp.changes.0", "", "mdp.changes.0");
        assert_eq!(
            origin(Some(&h), &t, Stage::Changes).map(|o| (o.exchange, o.routing_key)),
            Ok((String::new(), "mdp.changes.0".to_string()))
        );
    }

    #[test]
    fn messages_without_a_usable_origin_are_skipped() {
        let t = topology();
        assert_eq!(
            origin(None, &t, Stage::Changes),
            Err(SkipReason::NoDeathHeader)
        );
        let mut only_trace = FieldTable::default();
        only_trace.insert("traceparent".into(), long("x"));
        assert_eq!(
            origin(Some(&only_trace), &t, Stage::Changes),
            Err(SkipReason::NoDeathHeader)
        );
        // Another stage's queue, a partition out of range, another prefix.
        for (queue, stage) in [
            ("mdp.windows.1", Stage::Changes),
            ("mdp.windows.4", Stage::Windows),
            ("other.windows.1", Stage::Windows),
        ] {
            let h = dead(queue, "mdp.windows", "1");
            assert_eq!(
                origin(Some(&h), &t, stage),
                Err(SkipReason::ForeignQueue),
                "{queue}"
            );
        }
        let mut bad = FieldTable::default();
        bad.insert("x-death".into(), long("not an array"));
        assert_eq!(
            origin(Some(&bad), &t, Stage::Windows),
            Err(SkipReason::MalformedDeathHeader)
        );
        let mut empty = FieldTable::default();
        empty.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![])),
        );
        assert_eq!(
            origin(Some(&empty), &t, Stage::Windows),
            Err(SkipReason::MalformedDeathHeader)
        );
        let mut no_keys = dead("mdp.windows.1", "mdp.windows", "1");
        if let Some(AMQPValue::FieldArray(deaths)) = no_keys.inner().get("x-death").cloned() {
            if let Some(AMQPValue::FieldTable(first)) = deaths.as_slice().first() {
                let mut first = first.clone();
                first.insert(
                    "routing-keys".into(),
                    AMQPValue::FieldArray(FieldArray::from(vec![])),
                );
                no_keys.insert(
                    "x-death".into(),
                    AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(first)])),
                );
            }
        }
        assert_eq!(
            origin(Some(&no_keys), &t, Stage::Windows),
            Err(SkipReason::MalformedDeathHeader)
        );
    }

    /// Headers of a copy window-compute parked itself.
    fn parked_copy(queue: &str, exchange: &str, routing_key: &str) -> FieldTable {
        let mut headers = FieldTable::default();
        headers.insert(ORIGIN_QUEUE_HEADER.into(), long(queue));
        headers.insert(ORIGIN_EXCHANGE_HEADER.into(), long(exchange));
        headers.insert(ORIGIN_ROUTING_KEY_HEADER.into(), long(routing_key));
        headers.insert(REASON_HEADER.into(), long("poison"));
        headers.insert("traceparent".into(), long("00-aa-bb-01"));
        headers
    }

    #[test]
    fn a_copy_parked_by_a_service_names_its_origin_in_its_own_headers() {
        let t = topology();
        let h = parked_copy("mdp.windows.2", "mdp.windows", "2");
        assert_eq!(
            origin(Some(&h), &t, Stage::Windows),
            Ok(Origin {
                queue: "mdp.windows.2".into(),
                exchange: "mdp.windows".into(),
                routing_key: "2".into(),
            })
        );
        let foreign = parked_copy("mdp.windows.9", "mdp.windows", "9");
        assert_eq!(
            origin(Some(&foreign), &t, Stage::Windows),
            Err(SkipReason::ForeignQueue)
        );
        let mut partial = FieldTable::default();
        partial.insert(ORIGIN_QUEUE_HEADER.into(), long("mdp.windows.2"));
        partial.insert(ORIGIN_EXCHANGE_HEADER.into(), long("mdp.windows"));
        assert_eq!(
            origin(Some(&partial), &t, Stage::Windows),
            Err(SkipReason::MalformedDeathHeader)
        );
        // The broker's x-death wins when a copy was dead-lettered again.
        let mut both = dead("mdp.windows.3", "mdp.windows", "3");
        both.insert(ORIGIN_QUEUE_HEADER.into(), long("mdp.windows.1"));
        assert_eq!(
            origin(Some(&both), &t, Stage::Windows).map(|o| o.queue),
            Ok("mdp.windows.3".to_string())
        );
        // Replayed without the parking headers.
        let replayed = replay_headers(Some(&h), "admin/1");
        let names: Vec<&str> = replayed.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["traceparent", REPLAY_ID_HEADER, REPLAYS_HEADER]);
    }

    #[test]
    fn the_watch_keeps_since_when_a_queue_holds_messages() {
        let watch = DeadLetterWatch::default();
        assert!(watch.snapshot().is_empty());
        watch.record(Stage::Windows, "mdp.dlq.windows", 2, 1000);
        watch.record(Stage::Changes, "mdp.dlq.changes", 0, 1000);
        watch.record(Stage::Windows, "mdp.dlq.windows", 3, 2000);
        let depths = watch.snapshot();
        assert_eq!(
            depths
                .iter()
                .map(|d| (d.stage, d.messages, d.parked_since_ms, d.checked_at_ms))
                .collect::<Vec<_>>(),
            vec![("changes", 0, None, 1000), ("windows", 3, Some(1000), 2000)]
        );
        // Seen empty: the next message starts a new period.
        watch.record(Stage::Windows, "mdp.dlq.windows", 0, 3000);
        watch.record(Stage::Windows, "mdp.dlq.windows", 1, 4000);
        watch.forget(Stage::Changes);
        let depths = watch.snapshot();
        assert_eq!(depths.len(), 1);
        assert_eq!(depths[0].parked_since_ms, Some(4000));
        assert_eq!(consuming_service(Stage::Results), "result-writer");
    }

    #[test]
    fn replay_headers_drop_the_death_and_count_replays() {
        let h = dead("mdp.windows.3", "mdp.windows", "3");
        let first = replay_headers(Some(&h), "admin/1");
        let names: Vec<&str> = first.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["traceparent", REPLAY_ID_HEADER, REPLAYS_HEADER]);
        assert_eq!(
            first.inner().get(REPLAYS_HEADER),
            Some(&AMQPValue::LongLongInt(1))
        );
        assert!(replayed_by(Some(&first), "admin/1"));
        assert!(!replayed_by(Some(&first), "admin/2"));
        assert!(!replayed_by(Some(&h), "admin/1"));

        // Dead-lettered again and replayed again: counted up, the broker's
        // new death dropped again.
        let mut again = dead("mdp.windows.3", "mdp.windows", "3");
        again.insert(REPLAYS_HEADER.into(), AMQPValue::LongInt(1));
        again.insert(REPLAY_ID_HEADER.into(), long("admin/1"));
        again.insert("x-delivery-count".into(), AMQPValue::LongInt(2));
        let second = replay_headers(Some(&again), "admin/2");
        assert_eq!(
            second.inner().get(REPLAYS_HEADER),
            Some(&AMQPValue::LongLongInt(2))
        );
        assert_eq!(second.inner().get(REPLAY_ID_HEADER), Some(&long("admin/2")));
        assert!(!second.contains_key("x-death"));
        assert!(!second.contains_key("x-delivery-count"));

        let none = replay_headers(None, "r");
        assert_eq!(none.inner().len(), 2);
    }
}
