//! Events for the downstream pipeline, on the topic exchange `{ns}.events`
//! with the event type as routing key.
//!
//! ```json
//! {"v":1, "id":"…", "type":"asset.listed", "occurred_at":"…", "run_id":"2026-11-23", "data":{…}}
//! ```

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde::Serialize;
use serde_json::{json, Value};

use crate::alpaca::Asset;
use crate::broker::{BrokerError, Publisher, Topology};

/// What the downstream pipeline fetches for a newly listed asset.
pub const DATA_TYPES: [&str; 5] = [
    "company_overview",
    "earnings",
    "cash_flow",
    "balance_sheet",
    "income_statement",
];

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum EventType {
    /// A new asset appeared in a sync.
    #[serde(rename = "asset.listed")]
    AssetListed,
    /// An asset's status or tradable flag changed.
    #[serde(rename = "asset.status_changed")]
    AssetStatusChanged,
    /// A sync stopped seeing an asset.
    #[serde(rename = "asset.delisted")]
    AssetDelisted,
    /// A sync run finished and reconciled.
    #[serde(rename = "sync.completed")]
    SyncCompleted,
    /// A sync run refused to reconcile (the delisting guard).
    #[serde(rename = "sync.suspect")]
    SyncSuspect,
}

impl EventType {
    /// The routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AssetListed => "asset.listed",
            EventType::AssetStatusChanged => "asset.status_changed",
            EventType::AssetDelisted => "asset.delisted",
            EventType::SyncCompleted => "sync.completed",
            EventType::SyncSuspect => "sync.suspect",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Envelope version.
    pub v: u32,
    /// Unique id.
    pub id: String,
    /// The type, also the routing key.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The run that found it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The event's data.
    pub data: Value,
}

impl Event {
    /// A new event now.
    pub fn new(kind: EventType, run_id: Option<&str>, data: Value) -> Self {
        Event {
            v: 1,
            id: uuid::Uuid::new_v4().to_string(),
            kind,
            occurred_at: Utc::now(),
            run_id: run_id.map(str::to_owned),
            data,
        }
    }

    /// `asset.listed` for a new asset, with what the pipeline should fetch.
    pub fn listed(asset: &Asset, run_id: Option<&str>) -> Self {
        let data = json!({
            "asset_id": asset.id, "symbol": asset.symbol, "class": asset.class, "exchange": asset.exchange,
            "name": asset.name, "status": asset.status, "tradable": asset.tradable,
            "data_types": DATA_TYPES, "priority": "bulk", "source": "sync",
        });
        Event::new(EventType::AssetListed, run_id, data)
    }

    /// Publishes the event with a broker confirm.
    pub async fn publish(&self, publisher: &Publisher, topology: &Topology) -> Result<(), BrokerError> {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let properties = BasicProperties::default()
            .with_message_id(self.id.as_str().into())
            .with_content_type("application/json".into())
            .with_type(self.kind.as_str().into());
        publisher
            .publish(&topology.events_exchange(), self.kind.as_str(), &body, properties)
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_routing_key_is_the_serialised_type() {
        for kind in [
            EventType::AssetListed,
            EventType::AssetStatusChanged,
            EventType::AssetDelisted,
            EventType::SyncCompleted,
            EventType::SyncSuspect,
        ] {
            let event = Event::new(kind, None, json!({}));
            let wire = serde_json::to_value(&event).unwrap_or_default();
            assert_eq!(wire["type"], kind.as_str());
            assert!(wire.get("run_id").is_none(), "no run, no field");
        }
    }

    #[test]
    fn a_listed_event_says_what_to_fetch() {
        let asset: Asset = serde_json::from_value(json!({
            "id": "904837e3-3b76-47ec-b432-046db621571b", "class": "us_equity", "exchange": "NASDAQ",
            "symbol": "AAPL", "name": "Apple Inc.", "status": "active", "tradable": true,
            "marginable": true, "shortable": true, "easy_to_borrow": true, "fractionable": true,
            "attributes": []
        }))
        .unwrap_or_else(|e| panic!("asset: {e}"));
        let event = Event::listed(&asset, Some("run-7"));
        assert_eq!(event.kind, EventType::AssetListed);
        assert_eq!(event.run_id.as_deref(), Some("run-7"));
        assert_eq!(event.data["symbol"], "AAPL");
        assert_eq!(event.data["priority"], "bulk");
        assert!(event.data["data_types"].as_array().is_some_and(|t| !t.is_empty()));
    }
}
