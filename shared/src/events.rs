//! Events for the downstream pipeline, on the topic exchange `{ns}.events`
//! with the event type as routing key.
//!
//! ```json
//! {"v":1, "id":"…", "type":"asset.listed", "occurred_at":"…", "run_id":"2026-11-23", "data":{…}}
//! ```
//!
//! Events are never published straight from a handler: the store writes
//! each one into its outbox in the same transaction as the change it
//! describes, and the relay ([`crate::outbox`]) publishes from there.
//! Delivery is therefore at-least-once. An event's `id` is stable: it is
//! derived from what happened (the asset, the change, the state before it),
//! so the same change found twice, by a retry or by two workers, carries the
//! same id, and consumers drop duplicates by id.

use chrono::{DateTime, Utc};
use lapin::BasicProperties;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::broker::{BrokerError, Publisher, Topology};
use signal9_alpaca::Asset;

/// The namespace of event ids (UUID v5 over a description of the change).
const EVENT_ID_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x5e9a_1e00_0000_4000_8000_0000_0000_0009);

/// What the downstream pipeline fetches for a newly listed asset.
pub(crate) const DATA_TYPES: [&str; 5] = [
    "company_overview",
    "earnings",
    "cash_flow",
    "balance_sheet",
    "income_statement",
];

/// The kinds of event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// A new asset appeared in a sync, or a delisted one was listed again
    /// (`data.relisted` is then true).
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
    /// A corporate action changed the adjusted prices of a stored series:
    /// its bars and coverage were dropped, the next request fetches it again.
    #[serde(rename = "bars.invalidated")]
    BarsInvalidated,
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
            EventType::BarsInvalidated => "bars.invalidated",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Envelope version.
    pub v: u32,
    /// Stable id: the same change always has the same id.
    pub id: String,
    /// The type, also the routing key.
    #[serde(rename = "type")]
    pub kind: EventType,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The run that found it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The event's data.
    pub data: Value,
}

impl Event {
    /// An event whose id is derived from `identity`, a description of the
    /// change that is the same whoever finds it.
    pub fn stable(kind: EventType, identity: &str, run_id: Option<&str>, data: Value, at: DateTime<Utc>) -> Self {
        let name = format!("{}|{identity}", kind.as_str());
        Event {
            v: 1,
            id: uuid::Uuid::new_v5(&EVENT_ID_NAMESPACE, name.as_bytes()).to_string(),
            kind,
            occurred_at: at,
            run_id: run_id.map(str::to_owned),
            data,
        }
    }

    /// `asset.listed` for a new asset, with what the pipeline should fetch.
    pub fn listed(asset: &Asset, run_id: Option<&str>, at: DateTime<Utc>) -> Self {
        Event::stable(
            EventType::AssetListed,
            &format!("{}|new", asset.id),
            run_id,
            listed_data(asset, false),
            at,
        )
    }

    /// The event as stored in an outbox.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
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

pub(crate) fn listed_data(asset: &Asset, relisted: bool) -> Value {
    json!({
        "asset_id": asset.id, "symbol": asset.symbol, "class": asset.class, "exchange": asset.exchange,
        "name": asset.name, "status": asset.status, "tradable": asset.tradable,
        "data_types": DATA_TYPES, "priority": "bulk", "source": "sync", "relisted": relisted,
    })
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
            let event = Event::stable(kind, "x", None, json!({}), Utc::now());
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
        let event = Event::listed(&asset, Some("run-7"), Utc::now());
        assert_eq!(event.kind, EventType::AssetListed);
        let again = Event::listed(&asset, Some("run-8"), Utc::now());
        assert_eq!(event.id, again.id, "the same change has the same id");
        let back: Event = serde_json::from_str(&event.to_json()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(back, event);
        assert_eq!(event.run_id.as_deref(), Some("run-7"));
        assert_eq!(event.data["symbol"], "AAPL");
        assert_eq!(event.data["priority"], "bulk");
        assert!(event.data["data_types"].as_array().is_some_and(|t| !t.is_empty()));
    }
}
