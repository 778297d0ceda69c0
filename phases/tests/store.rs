//! The phase store on a real MariaDB server: moves recorded with their audit row, stale and
//! disallowed moves refused without a trace, one controller lease at a time.

use phases::{Move, Phase, PhaseError, PhaseStore};

async fn store() -> PhaseStore {
    let db = testkit::monolith_server()
        .create_database("strangler")
        .await
        .unwrap();
    PhaseStore::open(&db.url).await.unwrap()
}

#[tokio::test]
async fn moves_are_recorded_with_their_audit_and_checked() {
    let store = store().await;
    let start = store.states(&["users"]).await.unwrap().remove(0);
    assert_eq!((start.phase, start.version), (Phase::Monolith, 0));
    let gates = serde_json::json!({"replication-lag": {"seconds": 0.4, "bound": 5}});
    let backfilling = store
        .record(Move {
            domain: "users",
            from: &start,
            to: Phase::Backfilling,
            actor: "ops@shop",
            reason: "start users",
            gates: gates.clone(),
            forced: false,
        })
        .await
        .unwrap();
    assert_eq!(
        (backfilling.phase, backfilling.version),
        (Phase::Backfilling, 1)
    );
    assert_eq!(backfilling.changed_by, "ops@shop");

    // A second operator who read the old state is refused, and so is a skipped phase.
    let stale = store
        .record(Move {
            domain: "users",
            from: &start,
            to: Phase::Backfilling,
            actor: "other",
            reason: "late",
            gates: serde_json::Value::Null,
            forced: false,
        })
        .await
        .unwrap_err();
    assert!(matches!(stale, PhaseError::Conflict { .. }), "{stale}");
    let skip = store
        .record(Move {
            domain: "users",
            from: &backfilling,
            to: Phase::ServicePrimary,
            actor: "ops@shop",
            reason: "hurry",
            gates: serde_json::Value::Null,
            forced: false,
        })
        .await
        .unwrap_err();
    assert!(
        skip.to_string().contains("the next step is verified"),
        "{skip}"
    );

    // Back to the monolith from anywhere.
    let back = store
        .record(Move {
            domain: "users",
            from: &backfilling,
            to: Phase::Monolith,
            actor: "ops@shop",
            reason: "roll back",
            gates: serde_json::Value::Null,
            forced: true,
        })
        .await
        .unwrap();
    assert_eq!((back.phase, back.version), (Phase::Monolith, 2));

    let history = store.history("users", 10).await.unwrap();
    assert_eq!(history.len(), 2, "refused moves leave no audit row");
    assert_eq!(
        (history[0].from.as_str(), history[0].to.as_str()),
        ("backfilling", "monolith")
    );
    assert!(history[0].forced);
    assert_eq!(history[1].gates, gates);
    assert_eq!(history[1].reason, "start users");
    // Other domains are untouched.
    assert_eq!(store.states(&["orders"]).await.unwrap()[0].version, 0);
}

#[tokio::test]
async fn one_controller_holds_the_lease() {
    let store = store().await;
    store.acquire_lease("controller-a", 30).await.unwrap();
    store.acquire_lease("controller-a", 30).await.unwrap();
    let held = store.acquire_lease("controller-b", 30).await.unwrap_err();
    assert!(held.to_string().contains("held by controller-a"), "{held}");
    store.release_lease("controller-b").await.unwrap();
    assert!(store.acquire_lease("controller-b", 30).await.is_err());
    store.release_lease("controller-a").await.unwrap();
    store.acquire_lease("controller-b", 1).await.unwrap();
    // An expired lease is free for the taking.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    store.acquire_lease("controller-a", 30).await.unwrap();
}
