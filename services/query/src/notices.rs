//! Change notices from result-writer: which (report, merchant) rows a
//! written batch changed. They let the in-process cache keep an answer
//! until its rows change, instead of serving it unchanged for its whole
//! lifetime after a write.
//!
//! [`ChangeMarks`] numbers the notices as they arrive and remembers, per
//! report and merchant, the number of the last change. A cached snapshot
//! records the number current when its load began; it is out of date once
//! a later change of its report and merchant (or, for answers over every
//! merchant, of its report) has arrived. [`NoticeListener`] consumes the
//! fanout exchange `{prefix}.notices` through a private queue and feeds the
//! marks; while it is not connected, notices are missed and the cache
//! lifetime alone bounds how long a cached answer is served.

use crate::events;
use actix::prelude::*;
use futures::StreamExt;
use lapin::Consumer;
use mdp_amqp::{AmqpError, Topology};
use mdp_service::ServiceContext;
use mdp_types::ResultNotice;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Largest notice accepted (a batch naming every merchant of many reports).
const NOTICE_MAX_BYTES: usize = 16 * 1024 * 1024;

/// The last change of one report.
#[derive(Debug, Default)]
struct ReportMarks {
    /// Last change of any of its rows.
    any: u64,
    /// Last change of rows not keyed by merchant.
    unkeyed: u64,
    /// Last change of each merchant's rows.
    tenants: HashMap<String, u64>,
}

/// Numbers of the last change per report and merchant (see the module docs).
#[derive(Debug, Default)]
pub struct ChangeMarks {
    seq: AtomicU64,
    reports: Mutex<HashMap<String, ReportMarks>>,
}

impl ChangeMarks {
    /// The number of the last change recorded: a load that starts now sees
    /// every change up to it.
    pub fn current(&self) -> u64 {
        self.seq.load(Ordering::SeqCst)
    }

    /// Records the changes `notice` names.
    pub fn record(&self, notice: &ResultNotice) {
        let mut reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        for changed in &notice.changed {
            let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            let marks = reports.entry(changed.report.clone()).or_default();
            marks.any = n;
            match &changed.tenant {
                Some(t) => {
                    marks.tenants.insert(t.clone(), n);
                }
                None => marks.unkeyed = n,
            }
        }
    }

    /// Whether rows of `report` for `tenant` (every merchant when `None`)
    /// changed after change number `seen`.
    pub fn changed_since(&self, report: &str, tenant: Option<&str>, seen: u64) -> bool {
        if self.current() <= seen {
            return false;
        }
        let reports = self.reports.lock().unwrap_or_else(|p| p.into_inner());
        let Some(marks) = reports.get(report) else {
            return false;
        };
        let last = match tenant {
            None => marks.any,
            Some(t) => marks
                .tenants
                .get(t)
                .copied()
                .unwrap_or(0)
                .max(marks.unkeyed),
        };
        last > seen
    }
}

/// Consumes change notices into [`ChangeMarks`], reconnecting with backoff.
pub struct NoticeListener {
    ctx: ServiceContext,
    topology: Topology,
    marks: Arc<ChangeMarks>,
    /// Bumped on every (re)connect so an old consumer's end is ignored.
    generation: u64,
    failures: u32,
}

impl NoticeListener {
    pub fn new(ctx: ServiceContext, marks: Arc<ChangeMarks>) -> Self {
        let topology = Topology::from_settings(&ctx.settings);
        NoticeListener {
            ctx,
            topology,
            marks,
            generation: 0,
            failures: 0,
        }
    }

    fn connect(&mut self, delay: Duration, actx: &mut Context<Self>) {
        self.generation += 1;
        let generation = self.generation;
        let url = self.ctx.settings.rabbitmq.url.expose().to_string();
        let name = format!("{} notices", self.ctx.instance);
        let topology = self.topology.clone();
        let cancel = self.ctx.cancel.clone();
        let setup = async move {
            let conn = mdp_amqp::connect_after(delay, &url, &name, &cancel).await?;
            let set_up = async {
                let channel = mdp_amqp::open_channel(&conn).await?;
                mdp_service::declare_fanout_exchanges(&channel, &topology).await?;
                let _ = channel.close(200, "declared".into()).await;
                mdp_amqp::fanout_consumer(&conn, &topology.notices_exchange(), &name).await
            };
            match set_up.await {
                Ok((channel, consumer)) => Ok((conn, channel, consumer)),
                Err(e) => {
                    let _ = conn.close(200, "set-up failed".into()).await;
                    Err(e)
                }
            }
        };
        actx.spawn(setup.into_actor(self).map(move |result, act, actx| {
            if generation != act.generation {
                return;
            }
            match result {
                Ok((conn, channel, consumer)) => {
                    act.failures = 0;
                    events::notice_link(true);
                    tracing::info!("change notices link up");
                    let marks = act.marks.clone();
                    let consume = async move {
                        let why = consume(consumer, &marks).await;
                        drop(channel);
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            conn.close(200, "notices consumer ended".into()),
                        )
                        .await;
                        why
                    };
                    actx.spawn(
                        consume
                            .into_actor(act)
                            .map(move |why, act, actx| act.lost(generation, &why, actx)),
                    );
                }
                Err(AmqpError::Cancelled) => {}
                Err(error @ AmqpError::InvalidUrl(_)) => {
                    tracing::error!(
                        error = %mdp_telemetry::error_chain(&error),
                        "change notices not received: rabbitmq.url is invalid"
                    );
                }
                Err(error) => {
                    let delay = mdp_amqp::backoff_delay(act.failures);
                    act.failures = act.failures.saturating_add(1);
                    tracing::warn!(
                        error = %mdp_telemetry::error_chain(&error),
                        retry_in_ms = delay.as_millis() as u64,
                        "change notices link set-up failed"
                    );
                    act.connect(delay, actx);
                }
            }
        }));
    }

    fn lost(&mut self, generation: u64, why: &str, actx: &mut Context<Self>) {
        if generation != self.generation || self.ctx.cancel.is_cancelled() {
            return;
        }
        events::notice_link(false);
        tracing::warn!(error = why, "change notices link lost, reconnecting");
        let delay = mdp_amqp::backoff_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        self.connect(delay, actx);
    }
}

impl Actor for NoticeListener {
    type Context = Context<Self>;

    fn started(&mut self, actx: &mut Context<Self>) {
        events::notice_link(false);
        self.connect(Duration::ZERO, actx);
        let cancel = self.ctx.cancel.clone();
        actx.spawn(
            async move { cancel.cancelled().await }
                .into_actor(self)
                .map(|(), _, actx| {
                    events::notice_link(false);
                    actx.stop();
                }),
        );
    }
}

/// Records notices until the consumer ends; returns why it ended.
async fn consume(mut consumer: Consumer, marks: &ChangeMarks) -> String {
    while let Some(next) = consumer.next().await {
        let delivery = match next {
            Ok(d) => d,
            Err(e) => return format!("notices consumer failed: {e}"),
        };
        match mdp_amqp::decode_json::<ResultNotice>(&delivery, NOTICE_MAX_BYTES) {
            Ok(notice) => {
                marks.record(&notice);
                events::notice("recorded");
            }
            Err(error) => {
                tracing::warn!(%error, "change notice malformed, dropped");
                events::notice("malformed");
            }
        }
        if let Err(e) = mdp_amqp::ack(&delivery).await {
            return format!("notice ack failed: {}", mdp_telemetry::error_chain(&e));
        }
    }
    "notices consumer ended".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdp_types::ChangedRows;

    fn notice(changed: &[(&str, Option<&str>)]) -> ResultNotice {
        ResultNotice {
            partition: 0,
            window_id: 1,
            changed: changed
                .iter()
                .map(|(r, t)| ChangedRows {
                    report: r.to_string(),
                    tenant: t.map(str::to_string),
                })
                .collect(),
        }
    }

    #[test]
    fn a_change_dates_its_merchant_and_the_whole_report_only() {
        let marks = ChangeMarks::default();
        let seen = marks.current();
        marks.record(&notice(&[("daily", Some("7"))]));
        assert!(marks.changed_since("daily", Some("7"), seen));
        assert!(
            marks.changed_since("daily", None, seen),
            "every merchant's answer"
        );
        assert!(!marks.changed_since("daily", Some("8"), seen));
        assert!(!marks.changed_since("hourly", Some("7"), seen));
        assert!(!marks.changed_since("hourly", None, seen));
        // A load that began after the change is current.
        let later = marks.current();
        assert!(!marks.changed_since("daily", Some("7"), later));
        assert!(!marks.changed_since("daily", None, later));
    }

    #[test]
    fn a_change_of_a_report_across_merchants_dates_every_answer_of_it() {
        let marks = ChangeMarks::default();
        let seen = marks.current();
        marks.record(&notice(&[("city_daily", None)]));
        assert!(marks.changed_since("city_daily", None, seen));
        assert!(marks.changed_since("city_daily", Some("7"), seen));
        assert!(!marks.changed_since("daily", None, seen));
    }
}
