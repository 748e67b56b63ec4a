//! The store contract, run against the embedded SQLite backend.

use signal9_shared::store::AssetStore;
use signal9_shared::store::SqliteStore;

async fn fresh() -> SqliteStore {
    // Each test gets its own file; the folder lives as long as the process.
    let dir = tempfile::tempdir().expect("tempdir").keep();
    SqliteStore::open(dir.join("nested/signal9.db")).expect("open")
}

signal9_shared::store_contract_tests!(fresh());

#[tokio::test]
async fn a_second_connection_sees_the_first_ones_writes() {
    use signal9_shared::store::contract;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shared.db");
    let first = SqliteStore::open(&path).expect("open");
    let second = SqliteStore::open(&path).expect("open again");
    let asset = contract::sample_asset(1, "AAPL");
    first
        .upsert_assets(std::slice::from_ref(&asset), chrono::Utc::now())
        .await
        .expect("upsert");
    assert_eq!(
        second.get_asset(&asset.id).await.expect("get").map(|s| s.asset),
        Some(asset)
    );
}

#[test]
fn many_processes_opening_one_new_file_at_once_all_succeed() {
    // Threads stand in for processes: each opens its own connection.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("race.db");
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || SqliteStore::open(&path).map(|_| ()))
        })
        .collect();
    for handle in handles {
        handle.join().expect("thread").expect("open");
    }
}
