//! The RabbitMQ session supervisor: connects (with backoff), declares the
//! topology, starts one partition consumer per windows queue and rebuilds the
//! whole session when the connection or any consumer breaks.
//!
//! Every replica consumes every windows queue; the queues are quorum queues
//! with single-active-consumer, so the broker delivers each partition to one
//! replica at a time and hands it to another when that replica's consumer
//! goes away. The new owner continues from the committed state: on one
//! machine all replicas share the state directory (SQLite's file locking
//! serialises them); in production each replica has its own disk and a
//! partition's state is rebuilt from a checkpoint plus a replay of its windows.

use crate::actors::partition_consumer::{PartitionConsumer, Pipeline, Stop, Stopped};
use crate::actors::state_keeper::StateKeeper;
use crate::board::PartitionBoard;
use crate::configuration::ComputeOptions;
use crate::events::SessionStarted;
use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Context, WrapFuture};
use mdp_amqp::{AmqpError, Publisher, Topology};
use mdp_degrade::DegradeMachine;
use mdp_service::ServiceContext;
use mdp_telemetry::error_chain;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What the supervisor needs to build sessions.
#[derive(Clone)]
pub struct SupervisorConfig {
    pub ctx: ServiceContext,
    pub options: ComputeOptions,
    pub topology: Topology,
    /// One state keeper per partition, index = partition.
    pub keepers: Arc<Vec<Addr<StateKeeper>>>,
    pub board: PartitionBoard,
    /// The `rabbitmq` degrade machine.
    pub rabbit: DegradeMachine,
    /// The `state` degrade machine.
    pub state_machine: DegradeMachine,
}

/// Runs RabbitMQ sessions until the service is cancelled.
pub struct Supervisor {
    config: SupervisorConfig,
    done: Option<oneshot::Sender<()>>,
}

impl Supervisor {
    /// The supervisor and a receiver completed once it has shut down (the
    /// consumers stopped and the connection closed).
    pub fn new(config: SupervisorConfig) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        (
            Supervisor {
                config,
                done: Some(tx),
            },
            rx,
        )
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        let config = self.config.clone();
        ctx.spawn(supervise(config).into_actor(self).map(|(), act, ctx| {
            if let Some(done) = act.done.take() {
                let _ = done.send(());
            }
            ctx.stop();
        }));
    }
}

/// Why a session could not start.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("failed to declare the topology")]
    Declare(#[source] AmqpError),
    #[error("failed to open the result publisher")]
    Publisher(#[source] AmqpError),
    #[error("failed to consume {queue}")]
    Consume {
        queue: String,
        #[source]
        source: AmqpError,
    },
    #[error("failed to open a channel")]
    Channel(#[source] lapin::Error),
}

async fn supervise(config: SupervisorConfig) {
    let ctx = &config.ctx;
    let cancel = ctx.cancel.clone();
    let name = format!("{}/{}", crate::SERVICE, ctx.instance);
    ctx.readiness.set("rabbitmq", Err("connecting".into()));
    let mut failures = 0u32;
    loop {
        let conn = match mdp_amqp::connect(ctx.settings.rabbitmq.url.expose(), &name, &cancel).await
        {
            Ok(conn) => conn,
            Err(_) => break,
        };
        let (exits_tx, mut exits) = mpsc::unbounded_channel();
        match start_session(&config, &conn, exits_tx).await {
            Ok(session) => {
                failures = 0;
                SessionStarted {
                    partitions: session.consumers.len(),
                }
                .emit();
                ctx.stats.add("mdp_compute_amqp_sessions_total", 1.0);
                config.rabbit.record_success();
                ctx.readiness.set("rabbitmq", Ok(()));
                let stopped = tokio::select! {
                    _ = cancel.cancelled() => None,
                    stopped = exits.recv() => Some(stopped),
                };
                end_session(&session).await;
                close(&conn).await;
                let Some(stopped) = stopped else { break };
                let reason = match stopped {
                    Some(Stopped { partition, exit }) => {
                        format!("consumer of partition {partition} stopped: {exit:?}")
                    }
                    None => "every consumer stopped".to_string(),
                };
                tracing::warn!(error = %reason, "rabbitmq session lost, reconnecting");
                config.rabbit.record_failure(&reason);
                ctx.readiness.set("rabbitmq", Err(reason));
            }
            Err(e) => {
                let text = error_chain(&e);
                tracing::warn!(error = %text, "rabbitmq session failed to start, retrying");
                config.rabbit.record_failure(&text);
                ctx.readiness.set("rabbitmq", Err(text));
                close(&conn).await;
            }
        }
        failures += 1;
        let delay = config.options.reconnect_backoff.delay(failures);
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(delay) => {}
        }
    }
    ctx.readiness.set("rabbitmq", Err("stopped".into()));
    tracing::info!("window consumers stopped");
}

/// The running consumers of a session with their channels, and the
/// publisher they share.
struct Session {
    consumers: Vec<(Addr<PartitionConsumer>, lapin::Channel)>,
    publisher: Publisher,
}

async fn start_session(
    config: &SupervisorConfig,
    conn: &lapin::Connection,
    exits: mpsc::UnboundedSender<Stopped>,
) -> Result<Session, SessionError> {
    let channel = conn.create_channel().await.map_err(SessionError::Channel)?;
    config
        .topology
        .declare(&channel)
        .await
        .map_err(SessionError::Declare)?;
    // The declaring channel is not needed any more; a failed close changes nothing.
    let _ = channel.close(200, "topology declared".into()).await;
    // Mandatory: a result batch that reaches no queue is an error, not a silent loss.
    let publisher = Publisher::new(conn)
        .await
        .map_err(SessionError::Publisher)?
        .with_mandatory(true);
    let pipeline = Arc::new(Pipeline {
        ctx: config.ctx.clone(),
        options: config.options.clone(),
        topology: config.topology.clone(),
        publisher,
        board: config.board.clone(),
        state_machine: config.state_machine.clone(),
    });
    let mut session = Session {
        consumers: Vec::new(),
        publisher: pipeline.publisher.clone(),
    };
    for (partition, keeper) in config.keepers.iter().enumerate() {
        let partition = partition as u32;
        let queue = config.topology.windows_queue(partition);
        let tag = format!("{}/p{partition}", config.ctx.instance);
        let started = mdp_amqp::consumer(conn, &queue, &tag, config.options.prefetch).await;
        let (channel, consumer) = match started {
            Ok(pair) => pair,
            Err(source) => {
                end_session(&session).await;
                return Err(SessionError::Consume { queue, source });
            }
        };
        let actor = PartitionConsumer::new(
            partition,
            channel.clone(),
            consumer,
            keeper.clone(),
            pipeline.clone(),
            exits.clone(),
        );
        session.consumers.push((actor.start(), channel));
    }
    Ok(session)
}

/// Closes the consumer channels (the broker requeues their unacknowledged
/// windows) and the publisher channel, then stops the consumer actors. The
/// channels are closed here, before the connection, because a channel that
/// closes on drop while its connection closes makes the client report a
/// connection error.
async fn end_session(session: &Session) {
    let channels = session
        .consumers
        .iter()
        .map(|(_, channel)| channel)
        .chain(std::iter::once(session.publisher.channel()));
    futures::future::join_all(channels.map(close_channel)).await;
    // An error means the consumer had stopped already (and released its partition).
    let stops = session
        .consumers
        .iter()
        .map(|(consumer, _)| consumer.send(Stop));
    let _ = futures::future::join_all(stops).await;
}

async fn close_channel(channel: &lapin::Channel) {
    let closed = tokio::time::timeout(
        CLOSE_TIMEOUT,
        channel.close(200, "window-compute session closed".into()),
    )
    .await;
    match closed {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %error, "closing a channel failed"),
        Err(_) => tracing::debug!("closing a channel timed out"),
    }
}

/// How long closing a channel or the connection may take.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

async fn close(conn: &lapin::Connection) {
    match tokio::time::timeout(
        CLOSE_TIMEOUT,
        conn.close(200, "window-compute session closed".into()),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::debug!(error = %error, "closing the rabbitmq connection failed"),
        Err(_) => tracing::debug!("closing the rabbitmq connection timed out"),
    }
}
