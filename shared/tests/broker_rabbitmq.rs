//! The topology against the real RabbitMQ, under a namespace of its own:
//! declared twice, a job routed to its queue, a retry tier delivering back
//! with the original routing key, a rejected job reaching the dead-letter
//! queue with its headers, an event on the events exchange, and clean-up.
#![allow(clippy::unwrap_used)]

use lapin::options::{BasicGetOptions, BasicNackOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel};
use signal9_alpaca::class::{Classify, ErrorClass};
use signal9_shared::broker::{self, Publisher, Topology};
use signal9_shared::events::{Event, EventType};
use signal9_shared::job::{routing_key, JobKind, Priority};
use std::time::{Duration, Instant};

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

use signal9_shared::testing::namespace;

/// Polls `queue` until a message arrives or `within` runs out.
async fn get(channel: &Channel, queue: &str, within: Duration) -> Option<lapin::message::BasicGetMessage> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(message) = channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            return Some(message);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn jobs_retries_dead_letters_and_events_flow_through_the_topology() {
    let ns = namespace();
    let topology = Topology::new(&ns, vec![Duration::from_millis(300), Duration::from_secs(2)]);
    let connection = broker::connect(AMQP_URL, "broker-test").await.unwrap();
    let publisher = Publisher::open(&connection).await.unwrap();
    let channel = publisher.channel().clone();
    // Declaring is idempotent: a second process starting changes nothing.
    topology.declare(&channel).await.unwrap();
    topology.declare(&channel).await.unwrap();

    // A job published on the jobs exchange lands in its kind's queue, with headers intact.
    let key = routing_key(JobKind::FetchBars, Priority::Bulk);
    let mut headers = FieldTable::default();
    broker::set_str(&mut headers, broker::HEADER_ROUTING_KEY, &key);
    broker::set_u32(&mut headers, broker::HEADER_ATTEMPT, 2);
    publisher
        .publish(
            &topology.jobs_exchange(),
            &key,
            b"job-1",
            BasicProperties::default().with_headers(headers.clone()),
        )
        .await
        .unwrap();
    let queue = topology.job_queue(JobKind::FetchBars, Priority::Bulk);
    let got = get(&channel, &queue, Duration::from_secs(5))
        .await
        .expect("the job arrives");
    assert_eq!(got.delivery.data, b"job-1");
    let received = got.delivery.properties.headers().as_ref();
    assert_eq!(broker::header_u32(received, broker::HEADER_ATTEMPT), Some(2));
    assert_eq!(
        broker::header_str(received, broker::HEADER_ROUTING_KEY).as_deref(),
        Some(key.as_str())
    );
    got.delivery.ack(Default::default()).await.unwrap();

    // The interactive twin is a queue of its own.
    let interactive = routing_key(JobKind::FetchBars, Priority::Interactive);
    publisher
        .publish(
            &topology.jobs_exchange(),
            &interactive,
            b"job-2",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    let got = get(
        &channel,
        &topology.job_queue(JobKind::FetchBars, Priority::Interactive),
        Duration::from_secs(5),
    )
    .await
    .expect("the interactive job arrives in its own queue");
    assert_eq!(got.delivery.data, b"job-2");
    got.delivery.ack(Default::default()).await.unwrap();

    // A retry tier holds the job for its delay, then hands it back to the
    // jobs exchange with the routing key it was published with.
    let tier = topology.retry_exchange(0).unwrap();
    let sent = Instant::now();
    publisher
        .publish(&tier, &key, b"job-3", BasicProperties::default())
        .await
        .unwrap();
    let got = get(&channel, &queue, Duration::from_secs(10))
        .await
        .expect("the job comes back from the retry tier");
    assert!(
        sent.elapsed() >= Duration::from_millis(250),
        "held for the tier's delay"
    );
    assert_eq!(got.delivery.data, b"job-3");

    // Rejected without requeue, it goes to the dead-letter queue.
    got.delivery
        .nack(BasicNackOptions {
            requeue: false,
            ..BasicNackOptions::default()
        })
        .await
        .unwrap();
    let dead = get(&channel, &topology.dead_letter_queue(), Duration::from_secs(10))
        .await
        .expect("the rejected job is dead-lettered");
    assert_eq!(dead.delivery.data, b"job-3");
    dead.delivery.ack(Default::default()).await.unwrap();

    // Events reach whoever binds to their type on the events exchange.
    let listener = format!("{ns}.listener");
    channel
        .queue_declare(
            listener.as_str().into(),
            QueueDeclareOptions {
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            listener.as_str().into(),
            topology.events_exchange().as_str().into(),
            "sync.*".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let event = Event::stable(
        EventType::SyncCompleted,
        "run-1",
        Some("run-1"),
        serde_json::json!({"pages": 2}),
        chrono::Utc::now(),
    );
    event.publish(&publisher, &topology).await.unwrap();
    let got = get(&channel, &listener, Duration::from_secs(5))
        .await
        .expect("the event arrives");
    let body: serde_json::Value = serde_json::from_slice(&got.delivery.data).unwrap();
    assert_eq!(body["type"], "sync.completed");
    assert_eq!(body["run_id"], "run-1");
    assert_eq!(body["data"]["pages"], 2);
    assert_eq!(
        got.delivery.properties.kind().as_ref().map(|k| k.as_str()),
        Some("sync.completed")
    );

    topology.delete(&channel).await.unwrap();
    let gone = channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await;
    assert!(gone.is_err(), "the namespace's queues are deleted");
    let _ = connection.close(200, "done".into()).await;
}

#[tokio::test]
async fn an_unreachable_broker_is_a_transient_error() {
    let error = broker::connect("amqp://guest:guest@127.0.0.1:1/%2f", "nobody")
        .await
        .expect_err("nothing listens on port 1");
    assert_eq!(error.class(), ErrorClass::Transient);
    assert!(error.to_string().starts_with("broker:"), "{error}");
}

#[test]
fn headers_read_any_integer_and_string_form() {
    let mut table = FieldTable::default();
    table.insert("a".into(), AMQPValue::LongInt(5));
    table.insert("b".into(), AMQPValue::ShortShortUInt(6));
    table.insert("c".into(), AMQPValue::ShortString("text".into()));
    table.insert("d".into(), AMQPValue::LongLongInt(-1));
    table.insert("e".into(), AMQPValue::Boolean(true));
    let t = Some(&table);
    assert_eq!(broker::header_u32(t, "a"), Some(5));
    assert_eq!(broker::header_u32(t, "b"), Some(6));
    assert_eq!(broker::header_u32(t, "c"), None);
    assert_eq!(broker::header_u32(t, "d"), None, "negative is not an attempt count");
    assert_eq!(broker::header_str(t, "c").as_deref(), Some("text"));
    assert_eq!(broker::header_str(t, "a"), None);
    assert_eq!(broker::header_str(None, "a"), None);
    assert_eq!(broker::header_display(&AMQPValue::LongInt(5)), "5");
    assert_eq!(broker::header_display(&AMQPValue::Boolean(true)), "true");
    assert_eq!(broker::header_display(&AMQPValue::ShortString("x".into())), "x");
    assert!(!broker::header_display(&AMQPValue::Float(1.5)).is_empty());
}

/// A deployment upgraded in place: its job queues were declared by an
/// older version, without `x-quorum-initial-group-size`. A declare with it
/// would be refused as inequivalent; `declare_on` leaves existing job
/// queues as they are, and still declares what is missing.
#[tokio::test]
async fn job_queues_declared_by_an_older_version_are_accepted_as_they_are() {
    let ns = namespace();
    let topology = Topology::new(&ns, vec![Duration::from_secs(1)]);
    let connection = broker::connect(AMQP_URL, "broker-test").await.unwrap();
    let channel = connection.create_channel().await.unwrap();
    let old = topology.job_queue(JobKind::FetchBars, Priority::Bulk);
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), AMQPValue::LongString("quorum".into()));
    args.insert("x-delivery-limit".into(), AMQPValue::LongLongInt(20));
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    channel.queue_declare(old.as_str().into(), durable, args).await.unwrap();
    topology.declare_on(&connection).await.unwrap();
    topology.declare_on(&connection).await.unwrap();
    // Every other queue exists now, and the old one is bound.
    let publisher = Publisher::open(&connection).await.unwrap();
    publisher
        .publish_routed(
            &topology.jobs_exchange(),
            &routing_key(JobKind::FetchBars, Priority::Bulk),
            b"job",
            BasicProperties::default(),
        )
        .await
        .unwrap();
    assert!(get(&channel, &old, Duration::from_secs(5)).await.is_some());
    let checker = connection.create_channel().await.unwrap();
    topology.delete(&checker).await.unwrap();
}
