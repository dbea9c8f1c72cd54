//! Tells readers which report rows were just written: after each batch, a
//! [`ResultNotice`] naming its (report, merchant) pairs goes to the fanout
//! exchange `{prefix}.notices`, and query drops what it cached of them.
//!
//! Best effort and never in the way of a partition: notices queued while one
//! is being published are merged into the next, and a notice that cannot be
//! published (no connection, broker error, no confirm in time) is counted
//! and dropped. Readers bound their caches in time as well, so a lost notice
//! delays a change by at most the reader's cache lifetime.

use crate::actors::amqp_link::LinkReceiver;
use crate::events;
use actix::prelude::*;
use mdp_amqp::Publisher;
use mdp_types::{ChangedRows, ResultNotice};
use std::collections::BTreeSet;
use std::time::Duration;

/// How long one publish may wait for the broker's confirm.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);

/// A written batch's notice, to publish.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Notify(pub ResultNotice);

/// Notices merged while a publish is in flight.
#[derive(Default)]
struct Merged {
    batches: usize,
    partition: u32,
    window_id: u64,
    changed: BTreeSet<ChangedRows>,
}

impl Merged {
    fn add(&mut self, notice: ResultNotice) {
        self.batches += 1;
        self.partition = notice.partition;
        self.window_id = notice.window_id;
        self.changed.extend(notice.changed);
    }

    fn take(&mut self) -> (usize, ResultNotice) {
        let merged = std::mem::take(self);
        (
            merged.batches,
            ResultNotice {
                partition: merged.partition,
                window_id: merged.window_id,
                changed: merged.changed.into_iter().collect(),
            },
        )
    }
}

/// Publishes change notices on the link's connection.
pub struct Notifier {
    link: LinkReceiver,
    exchange: String,
    publisher: Option<Publisher>,
    queued: Merged,
    busy: bool,
}

impl Notifier {
    pub fn new(link: LinkReceiver, exchange: String) -> Self {
        Notifier {
            link,
            exchange,
            publisher: None,
            queued: Merged::default(),
            busy: false,
        }
    }

    fn drive(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.queued.batches == 0 {
            return;
        }
        let (batches, notice) = self.queued.take();
        let entries = notice.changed.len();
        let publisher = self.publisher.take().filter(Publisher::is_open);
        let conn = self
            .link
            .borrow()
            .clone()
            .filter(|c| c.status().connected());
        let exchange = self.exchange.clone();
        self.busy = true;
        let publish = async move {
            let publisher = match (publisher, conn) {
                (Some(p), _) => p,
                (None, Some(conn)) => match Publisher::new(&conn).await {
                    Ok(p) => p,
                    Err(e) => return (None, Err(("failed", mdp_telemetry::error_chain(&e)))),
                },
                (None, None) => {
                    return (None, Err(("no_link", "no rabbitmq connection".to_string())))
                }
            };
            let sent = tokio::time::timeout(
                PUBLISH_TIMEOUT,
                publisher.publish_json(&exchange, "", &notice, None),
            )
            .await;
            let result = match sent {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(("failed", mdp_telemetry::error_chain(&e))),
                Err(_) => Err((
                    "failed",
                    format!("no publish confirm within {} s", PUBLISH_TIMEOUT.as_secs()),
                )),
            };
            (Some(publisher), result)
        };
        ctx.spawn(
            publish
                .into_actor(self)
                .map(move |(publisher, result), act, ctx| {
                    act.busy = false;
                    let (outcome, error) = match &result {
                        Ok(()) => ("published", None),
                        Err((outcome, e)) => (*outcome, Some(e.as_str())),
                    };
                    events::Notice {
                        outcome,
                        batches,
                        entries,
                        error,
                    }
                    .emit();
                    // A publisher that failed is opened anew for the next notice.
                    act.publisher = publisher.filter(|p| result.is_ok() && p.is_open());
                    act.drive(ctx);
                }),
        );
    }
}

impl Actor for Notifier {
    type Context = Context<Self>;
}

impl Handler<Notify> for Notifier {
    type Result = ();

    fn handle(&mut self, Notify(notice): Notify, ctx: &mut Context<Self>) {
        if notice.changed.is_empty() {
            return;
        }
        self.queued.add(notice);
        self.drive(ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(report: &str, tenant: Option<&str>) -> ChangedRows {
        ChangedRows {
            report: report.into(),
            tenant: tenant.map(str::to_string),
        }
    }

    #[test]
    fn queued_notices_merge_into_one_without_repeats() {
        let mut m = Merged::default();
        m.add(ResultNotice {
            partition: 1,
            window_id: 7,
            changed: vec![changed("daily", Some("3")), changed("city", None)],
        });
        m.add(ResultNotice {
            partition: 2,
            window_id: 9,
            changed: vec![changed("daily", Some("3")), changed("daily", Some("4"))],
        });
        let (batches, notice) = m.take();
        assert_eq!(batches, 2);
        assert_eq!(
            notice.changed,
            vec![
                changed("city", None),
                changed("daily", Some("3")),
                changed("daily", Some("4"))
            ]
        );
        assert_eq!((notice.partition, notice.window_id), (2, 9));
        assert_eq!(m.batches, 0);
        assert!(m.changed.is_empty());
    }
}
