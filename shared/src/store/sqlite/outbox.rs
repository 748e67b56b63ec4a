//! The outbox in SQLite: events written in the transaction of their change.

use super::*;

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn pending_events(&self, limit: usize) -> Result<Vec<PendingEvent>, StoreError> {
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        self.with(move |conn| {
            let mut stmt = conn
                .prepare("SELECT body FROM outbox ORDER BY seq LIMIT ?1")
                .map_err(backend)?;
            let rows = stmt
                .query_map(params![limit], |r| r.get::<_, String>(0))
                .map_err(backend)?;
            rows.map(|row| {
                let event: Event = serde_json::from_str(&row.map_err(backend)?)
                    .map_err(|e| StoreError::Corrupt(format!("outbox event: {e}")))?;
                Ok(PendingEvent {
                    receipt: event.id.clone(),
                    event,
                })
            })
            .collect()
        })
        .await
    }

    async fn events_sent(&self, sent: &[PendingEvent]) -> Result<(), StoreError> {
        let ids: Vec<String> = sent.iter().map(|p| p.receipt.clone()).collect();
        self.with(move |conn| {
            let tx = write_tx(conn)?;
            {
                let mut stmt = tx.prepare("DELETE FROM outbox WHERE id = ?1").map_err(backend)?;
                for id in &ids {
                    stmt.execute(params![id]).map_err(backend)?;
                }
            }
            tx.commit().map_err(backend)
        })
        .await
    }
}
