//! The optional second destination of every event: an Amazon EventBridge
//! bus (`SIGNAL9_EVENTBRIDGE_BUS`), where the downstream pipeline listens.
//!
//! The relay puts a batch on the bus before publishing it to RabbitMQ and
//! removing it from the outbox, so a failure on either side keeps the whole
//! batch for the next pass: delivery to EventBridge is at-least-once too,
//! and the `id` inside `detail` is the event's stable id. Each entry has
//! source `signal9`, detail-type the event type (`asset.listed`, ...), and
//! the event's JSON as detail.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::events::Event;
use crate::outbox::EventSink;

/// The entries PutEvents takes in one call.
const PUT_EVENTS_MAX: usize = 10;
/// The `source` of every entry.
pub(crate) const SOURCE: &str = "signal9";

/// Puts events on one EventBridge bus.
#[derive(Debug, Clone)]
pub struct EventBridgeSink {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeSink {
    /// A sink for `bus` (a name or ARN), with the AWS SDK's configuration.
    pub fn new(config: &aws_config::SdkConfig, bus: impl Into<String>) -> Self {
        EventBridgeSink {
            client: aws_sdk_eventbridge::Client::new(config),
            bus: bus.into(),
        }
    }
}

#[async_trait::async_trait]
impl EventSink for EventBridgeSink {
    async fn put(&self, events: &[Event]) -> Result<(), String> {
        for batch in events.chunks(PUT_EVENTS_MAX) {
            let entries: Vec<PutEventsRequestEntry> = batch
                .iter()
                .map(|event| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(event.kind.as_str())
                        .detail(event.to_json())
                        .time(aws_sdk_eventbridge::primitives::DateTime::from_millis(
                            event.occurred_at.timestamp_millis(),
                        ))
                        .build()
                })
                .collect();
            let output = self
                .client
                .put_events()
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| format!("EventBridge PutEvents on {}: {}", self.bus, crate::aws::describe(&e)))?;
            let failed = output.failed_entry_count();
            if failed > 0 {
                return Err(format!(
                    "EventBridge refused {failed} of {} events on {}",
                    batch.len(),
                    self.bus
                ));
            }
        }
        Ok(())
    }
}
