//! RabbitMQ in tests: queue depths, a tap on the events exchange, the
//! outbox drained.

use std::process::Command;
use std::time::Duration;

use crate::*;

/// A connection to the test broker that cannot hang: lapin's own connect
/// never resolves when the broker answers `connection.open` with a close
/// (amqp-rs/lapin#470), so tests connect through signal9's, which bounds
/// each attempt, and try a few times.
pub async fn amqp_connection() -> anyhow::Result<lapin::Connection> {
    let mut last = None;
    for _ in 0..3 {
        match signal9_shared::broker::connect(AMQP_URL, "signal9-tests").await {
            Ok(connection) => return Ok(connection),
            Err(error) => last = Some(error),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("no connection"), anyhow::Error::from))
}

/// Messages waiting in a queue (0 if it does not exist).
pub async fn queue_depth(queue: &str) -> anyhow::Result<u32> {
    let connection = amqp_connection().await?;
    let channel = connection.create_channel().await?;
    let options = lapin::options::QueueDeclareOptions {
        passive: true,
        ..Default::default()
    };
    let depth = match channel
        .queue_declare(queue.into(), options, lapin::types::FieldTable::default())
        .await
    {
        Ok(q) => q.message_count(),
        Err(_) => 0,
    };
    let _ = connection.close(200, "depth".into()).await;
    Ok(depth)
}

/// Declares a queue that receives every event of the stack's namespace and
/// returns its name: a server-named, exclusive one when `durable` is `None`,
/// or the durable queue of that name, which outlives a broker restart.
pub async fn events_queue(stack: &Stack, channel: &lapin::Channel, durable: Option<&str>) -> anyhow::Result<String> {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    stack.topology().declare(channel).await?;
    let options = match durable {
        Some(_) => QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        None => QueueDeclareOptions {
            exclusive: true,
            auto_delete: true,
            ..Default::default()
        },
    };
    let queue = channel
        .queue_declare(
            durable.unwrap_or("").into(),
            options,
            lapin::types::FieldTable::default(),
        )
        .await?;
    channel
        .queue_bind(
            queue.name().clone(),
            stack.topology().events_exchange().as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok(queue.name().to_string())
}

/// Consumes (no ack) every event of the stack's namespace from the queue
/// `events_queue` declares; keep the connection as long as the consumer.
pub async fn event_tap(stack: &Stack, durable: Option<&str>) -> anyhow::Result<(lapin::Connection, lapin::Consumer)> {
    let connection = amqp_connection().await?;
    let channel = connection.create_channel().await?;
    let queue = events_queue(stack, &channel, durable).await?;
    let consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "tap".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await?;
    Ok((connection, consumer))
}

/// Waits (up to 60 s) until the store's outbox is empty: every event the
/// workers wrote has been published. Panics if it does not empty.
pub async fn outbox_settled(store: &dyn signal9_shared::store::Store) {
    let empty = eventually(Duration::from_secs(60), || async {
        store.pending_events(1).await.map(|e| e.is_empty()).unwrap_or(false)
    })
    .await;
    assert!(empty, "the outbox did not empty within 60 s");
}

/// `rabbitmqctl ACTION` on the local broker (`stop_app`, `start_app`).
pub fn rabbitmqctl(action: &str) {
    let status = Command::new("rabbitmqctl").arg(action).status();
    assert!(status.is_ok_and(|s| s.success()), "rabbitmqctl {action} failed");
}
