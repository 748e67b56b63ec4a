//! Events survive a RabbitMQ outage between the store write and the
//! publish: they wait in the store's outbox and are sent once the broker is
//! back. Alone in its own test binary, because it stops the broker that
//! every test shares.
#![allow(clippy::unwrap_used)]

use futures::StreamExt;
use lapin::options::QueueDeleteOptions;
use signal9_e2e::{outbox_settled, rabbitmqctl, text, Stack};
use std::collections::HashSet;
use std::time::Duration;

async fn channel() -> (lapin::Connection, lapin::Channel) {
    let connection = signal9_e2e::amqp_connection().await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    (connection, channel)
}

/// Both tests stop the broker: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_while_rabbitmq_is_down_arrive_after_it_returns() {
    let _one = ONE_AT_A_TIME.lock().await;
    broker_outage(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_dynamodb_events_written_while_rabbitmq_is_down_arrive_after_it_returns() {
    let _one = ONE_AT_A_TIME.lock().await;
    broker_outage(true).await;
}

async fn broker_outage(dynamodb: bool) {
    let mut stack = Stack::start(&["--limit", "0", "--assets", "600"]).unwrap();
    let store = stack.store(dynamodb).await.unwrap();
    // A durable queue on the events exchange: it outlives the broker stop.
    let queue = format!("{}.events-tap", stack.namespace);
    {
        let (connection, channel) = channel().await;
        signal9_e2e::events_queue(&stack, &channel, Some(&queue)).await.unwrap();
        let _ = connection.close(200, "declared".into()).await;
    }
    // The sync's changes and their events are written with no relay running.
    stack.start_worker(&["--outbox-relay", "off"]).unwrap();
    let out = stack.producer(&["sync", "--run-id", "outage", "--wait"]).await.unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    let written: HashSet<String> = store
        .pending_events(100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event.id)
        .collect();
    assert_eq!(written.len(), 601);

    // The broker goes down; a relaying worker starts during the outage.
    rabbitmqctl("stop_app");
    stack.signal_worker(0, "-KILL").unwrap();
    stack.start_worker(&[]).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        store.pending_events(100_000).await.unwrap().len(),
        601,
        "nothing sent while down"
    );
    rabbitmqctl("start_app");

    outbox_settled(store.as_ref()).await;
    let (connection, mut consumer) = signal9_e2e::event_tap(&stack, Some(&queue)).await.unwrap();
    let mut arrived: HashSet<String> = HashSet::new();
    while let Ok(Some(Ok(delivery))) = tokio::time::timeout(Duration::from_secs(3), consumer.next()).await {
        let event: serde_json::Value = serde_json::from_slice(&delivery.data).unwrap();
        arrived.insert(event["id"].as_str().unwrap().to_owned());
    }
    let missing: Vec<&String> = written.difference(&arrived).collect();
    assert!(missing.is_empty(), "{} events never arrived", missing.len());
    let channel = connection.create_channel().await.unwrap();
    let _ = channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    let _ = connection.close(200, "done".into()).await;
    stack.cleanup().await;
}
