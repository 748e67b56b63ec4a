//! The tables and their indexes (see the table in the module's opening
//! comment), and creating or dropping them.

use super::*;

/// An attribute of a key: its name and type.
pub(super) type KeyAttr = (&'static str, ScalarAttributeType);

/// A global secondary index: its name, partition key, sort key, and the
/// attributes it projects besides the keys (`None`: all; empty: keys only).
pub(super) type IndexSpec = (&'static str, KeyAttr, KeyAttr, Option<&'static [&'static str]>);

/// The outbox index of a table whose items may hold events.
pub(super) fn outbox_index() -> IndexSpec {
    use ScalarAttributeType::S;
    (
        OUTBOX_INDEX,
        ("outbox_shard", S),
        ("outbox_key", S),
        Some(&["outbox", "outbox_n"]),
    )
}

/// One table's key design.
pub(super) struct TableSpec {
    name: &'static str,
    hash: KeyAttr,
    range: Option<KeyAttr>,
    indexes: Vec<IndexSpec>,
}

pub(super) fn specs() -> Vec<TableSpec> {
    use ScalarAttributeType::{N, S};
    let specs = vec![
        TableSpec {
            name: "assets",
            hash: ("id", S),
            range: None,
            indexes: vec![("by_symbol", ("symbol", S), ("id", S), None), outbox_index()],
        },
        TableSpec {
            name: "bar_chunks",
            hash: ("series", S),
            range: Some(("chunk", N)),
            indexes: vec![],
        },
        TableSpec {
            name: "coverage",
            hash: ("series", S),
            range: Some(("start_ms", N)),
            indexes: vec![(COVERAGE_BY_SYMBOL, ("symbol", S), ("series", S), Some(&[]))],
        },
        TableSpec {
            name: "runs",
            hash: ("run_id", S),
            range: None,
            indexes: vec![("by_start", ("kind", S), ("started", S), None), outbox_index()],
        },
        TableSpec {
            name: "run_pages",
            hash: ("run_id", S),
            range: Some(("page_id", S)),
            indexes: vec![],
        },
        TableSpec {
            name: "checkpoints",
            hash: ("id", S),
            range: None,
            indexes: vec![],
        },
        TableSpec {
            name: "corporate_actions",
            hash: ("id", S),
            range: None,
            indexes: vec![outbox_index()],
        },
    ];
    debug_assert!(specs.iter().map(|s| s.name).eq(DynamoStore::TABLES));
    specs
}

pub(super) fn gsi(index: &IndexSpec) -> Result<GlobalSecondaryIndex, StoreError> {
    let (name, (hash, _), (range, _), include) = index;
    let projection = match include {
        None => Projection::builder().projection_type(ProjectionType::All).build(),
        Some([]) => Projection::builder().projection_type(ProjectionType::KeysOnly).build(),
        Some(attributes) => Projection::builder()
            .projection_type(ProjectionType::Include)
            .set_non_key_attributes(Some(attributes.iter().map(|a| (*a).to_owned()).collect()))
            .build(),
    };
    GlobalSecondaryIndex::builder()
        .index_name(*name)
        .key_schema(key(hash, KeyType::Hash)?)
        .key_schema(key(range, KeyType::Range)?)
        .projection(projection)
        .build()
        .map_err(backend)
}

pub(super) fn key(name: &str, kind: KeyType) -> Result<KeySchemaElement, StoreError> {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .map_err(backend)
}

pub(super) fn attribute(name: &str, kind: ScalarAttributeType) -> Result<AttributeDefinition, StoreError> {
    AttributeDefinition::builder()
        .attribute_name(name)
        .attribute_type(kind)
        .build()
        .map_err(backend)
}

impl DynamoStore {
    /// Deletes every table of this prefix (tests and `init-store --drop` use it).
    pub async fn drop_tables(&self) -> Result<(), StoreError> {
        let names = specs().into_iter().map(|spec| spec.name).chain([LEGACY_BARS]);
        for name in names {
            let result = self.client.delete_table().table_name(self.table(name)).send().await;
            if let Err(error) = result {
                let missing = error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_not_found_exception());
                if !missing {
                    return Err(backend(error));
                }
            }
        }
        Ok(())
    }

    /// Creates a table and its indexes if missing, and waits until they
    /// are active. Returns the indexes it had to add to an existing table.
    pub(super) async fn create_table(&self, spec: &TableSpec) -> Result<Vec<&'static str>, StoreError> {
        let mut added = Vec::new();
        let table = self.table(spec.name);
        let mut attributes = vec![attribute(spec.hash.0, spec.hash.1.clone())?];
        let mut request = self
            .client
            .create_table()
            .table_name(&table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(spec.hash.0, KeyType::Hash)?);
        if let Some((name, kind)) = &spec.range {
            attributes.push(attribute(name, kind.clone())?);
            request = request.key_schema(key(name, KeyType::Range)?);
        }
        for index in &spec.indexes {
            let (_, (hash, hash_kind), (range, range_kind), _) = index;
            for (name, kind) in [(hash, hash_kind), (range, range_kind)] {
                if !attributes.iter().any(|a| a.attribute_name() == *name) {
                    attributes.push(attribute(name, kind.clone())?);
                }
            }
            request = request.global_secondary_indexes(gsi(index)?);
        }
        match request.set_attribute_definitions(Some(attributes)).send().await {
            Ok(_) => {}
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_resource_in_use_exception()) => {}
            Err(error) => return Err(backend(error)),
        }
        // A new table takes a moment to become ACTIVE.
        for _ in 0..120 {
            let described = self
                .client
                .describe_table()
                .table_name(&table)
                .send()
                .await
                .map_err(backend)?;
            let table_desc = described.table();
            let indexes_active = table_desc
                .map(|t| t.global_secondary_indexes())
                .unwrap_or_default()
                .iter()
                .all(|i| i.index_status() == Some(&aws_sdk_dynamodb::types::IndexStatus::Active));
            if table_desc.and_then(|t| t.table_status()) == Some(&TableStatus::Active) && indexes_active {
                let existing: Vec<String> = table_desc
                    .map(|t| t.global_secondary_indexes())
                    .unwrap_or_default()
                    .iter()
                    .filter_map(|i| i.index_name().map(str::to_owned))
                    .collect();
                match spec.indexes.iter().find(|i| !existing.iter().any(|e| e == i.0)) {
                    None => return Ok(added),
                    // A table made by an older version lacks an index: add it
                    // (one at a time, as DynamoDB allows) and wait again.
                    Some(missing) => {
                        self.add_index(&table, missing).await?;
                        added.push(missing.0);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        Err(StoreError::Backend(format!(
            "table {table} did not become ACTIVE within 60 s"
        )))
    }

    /// The per-bar table of versions before chunks, as they made it (tests
    /// of the migration write into it).
    #[cfg(feature = "test-support")]
    pub(super) async fn create_legacy_table(&self) -> Result<(), StoreError> {
        use ScalarAttributeType::{N, S};
        let spec = TableSpec {
            name: LEGACY_BARS,
            hash: ("series", S),
            range: Some(("t", N)),
            indexes: vec![],
        };
        self.create_table(&spec).await.map(drop)
    }

    pub(super) async fn add_index(&self, table: &str, index: &IndexSpec) -> Result<(), StoreError> {
        let (name, (hash, hash_kind), (range, range_kind), _) = index;
        let built = gsi(index)?;
        let create = aws_sdk_dynamodb::types::CreateGlobalSecondaryIndexAction::builder()
            .index_name(*name)
            .set_key_schema(Some(built.key_schema().to_vec()))
            .set_projection(built.projection().cloned())
            .build()
            .map_err(backend)?;
        self.client
            .update_table()
            .table_name(table)
            .attribute_definitions(attribute(hash, hash_kind.clone())?)
            .attribute_definitions(attribute(range, range_kind.clone())?)
            .global_secondary_index_updates(
                aws_sdk_dynamodb::types::GlobalSecondaryIndexUpdate::builder()
                    .create(create)
                    .build(),
            )
            .send()
            .await
            .map_err(backend)?;
        Ok(())
    }
}
