//! A status snapshot: every queue's depth and consumers, the live workers
//! (from their heartbeats) and the budgets' current windows. The
//! producer's `status` command prints it; the console's overview shows it.

use anyhow::{Context, Result};
use lapin::options::QueueDeclareOptions;
use lapin::types::FieldTable;
use serde::Serialize;
use serde_json::{json, Value};

use crate::broker::Topology;
use crate::gate::ApiGate;
use crate::job::{JobKind, Priority};
use crate::workers;
use signal9_alpaca::Api;

/// One queue's depth and consumers (`None`: the queue does not exist).
#[derive(Debug, Clone, Serialize)]
pub struct QueueState {
    /// The queue's name.
    pub name: String,
    /// Messages ready (not counting those delivered and unacked).
    pub messages: Option<u32>,
    /// Consumers attached.
    pub consumers: Option<u32>,
}

/// What the broker and Redis say now: every queue, the live workers and
/// the budgets' current windows.
#[derive(Debug, Clone, Serialize)]
pub struct Snapshot {
    /// The job queues, by kind then priority lane.
    pub queues: Vec<QueueState>,
    /// The retry tiers' delay queues.
    pub retry_queues: Vec<QueueState>,
    /// The dead-letter queue.
    pub dead_letters: QueueState,
    /// Live workers, from their heartbeats.
    pub workers: Vec<workers::Heartbeat>,
    /// Per API: limit, window_secs, in_window, paused_for_secs.
    pub budgets: serde_json::Map<String, Value>,
}

/// Reads every queue's depth on `connection`, the heartbeats and the
/// budgets through `gate`.
pub async fn snapshot(
    connection: &lapin::Connection,
    topology: &Topology,
    gate: &ApiGate,
    namespace: &str,
) -> Result<Snapshot> {
    let mut queues = Vec::new();
    for kind in JobKind::ALL {
        for priority in Priority::ALL {
            queues.push(queue_state(connection, topology.job_queue(kind, priority)).await);
        }
    }
    let mut retry_queues = Vec::new();
    for index in 0..topology.retry_tiers().len() {
        if let Some(name) = topology.retry_exchange(index) {
            retry_queues.push(queue_state(connection, name).await);
        }
    }
    let dead_letters = queue_state(connection, topology.dead_letter_queue()).await;
    let workers = workers::live(gate.budget(Api::Data).pool(), namespace)
        .await
        .context("reading the workers' heartbeats")?;
    let mut budgets = serde_json::Map::new();
    for api in [Api::Trading, Api::Data] {
        let size = gate.budget(api).size();
        let usage = gate.usage(api).await.context("reading the budgets")?;
        budgets.insert(
            api.as_str().into(),
            json!({
                "limit": size.limit,
                "window_secs": size.window.as_secs_f64(),
                "in_window": usage.in_window,
                "paused_for_secs": usage.paused_for.as_secs_f64(),
            }),
        );
    }
    Ok(Snapshot {
        queues,
        retry_queues,
        dead_letters,
        workers,
        budgets,
    })
}

async fn queue_state(connection: &lapin::Connection, name: String) -> QueueState {
    // A passive declare fails (and closes its channel) for a missing queue,
    // so each queue gets a channel of its own.
    let passive = QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let answer = match connection.create_channel().await {
        Ok(channel) => {
            let answer = channel
                .queue_declare(name.as_str().into(), passive, FieldTable::default())
                .await
                .ok();
            let _ = channel.close(200, "status".into()).await;
            answer
        }
        Err(_) => None,
    };
    QueueState {
        messages: answer.as_ref().map(lapin::Queue::message_count),
        consumers: answer.as_ref().map(lapin::Queue::consumer_count),
        name,
    }
}
