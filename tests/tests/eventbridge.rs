//! Events on EventBridge: a worker with `SIGNAL9_EVENTBRIDGE_BUS` set puts
//! every event it relays on that bus (source `signal9`, detail-type the
//! event type, detail the event). Checked on the local AWS-API server
//! (moto) through a rule that forwards the bus to an SQS queue.
#![allow(clippy::unwrap_used)]

use signal9_e2e::{aws_endpoint, aws_env, outbox_settled, text, Stack};
use signal9_shared::store::SqliteStore;
use std::collections::BTreeMap;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_a_bus_puts_every_event_on_eventbridge() {
    let config = signal9_shared::aws::AwsTarget::local(aws_endpoint()).load().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = format!("signal9-{}", signal9_shared::testing::namespace());

    // The bus, a rule for everything signal9 sends, and a queue behind it.
    events.create_event_bus().name(&name).send().await.unwrap();
    let queue_url = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let attributes = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap();
    let queue_arn = attributes.attributes().unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn].clone();
    events
        .put_rule()
        .name(&name)
        .event_bus_name(&name)
        .event_pattern(r#"{"source": ["signal9"]}"#)
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&name)
        .event_bus_name(&name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();

    let mut stack = Stack::start(&["--limit", "0", "--assets", "200"]).unwrap();
    stack.extra_env.extend(aws_env());
    stack.extra_env.push(("SIGNAL9_EVENTBRIDGE_BUS".into(), name.clone()));
    stack.start_worker(&[]).unwrap();
    let out = stack
        .producer(&["sync", "--run-id", "bridged", "--wait"])
        .await
        .unwrap();
    assert!(out.status.success(), "{}\n{}", text(&out), stack.worker_logs());
    outbox_settled(&SqliteStore::open(stack.sqlite_path()).unwrap()).await;

    // 200 asset.listed and one sync.completed, each by its stable id.
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 201 && tokio::time::Instant::now() < deadline {
        let received = sqs
            .receive_message()
            .queue_url(&queue_url)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        for message in received.messages() {
            let envelope: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
            assert_eq!(envelope["source"], "signal9", "{envelope}");
            let detail = &envelope["detail"];
            assert_eq!(envelope["detail-type"], detail["type"], "{envelope}");
            seen.insert(
                detail["id"].as_str().unwrap().to_owned(),
                detail["type"].as_str().unwrap().to_owned(),
            );
            sqs.delete_message()
                .queue_url(&queue_url)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
        if received.messages().is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let count = |kind: &str| seen.values().filter(|t| *t == kind).count();
    assert_eq!((count("asset.listed"), count("sync.completed")), (200, 1), "{seen:?}");
    let _ = events
        .remove_targets()
        .rule(&name)
        .event_bus_name(&name)
        .ids("queue")
        .send()
        .await;
    let _ = events.delete_rule().name(&name).event_bus_name(&name).send().await;
    let _ = events.delete_event_bus().name(&name).send().await;
    let _ = sqs.delete_queue().queue_url(&queue_url).send().await;
    stack.cleanup().await;
}
