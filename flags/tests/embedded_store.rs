//! The embedded flag store against real files and a real MariaDB: loads, hot reloads, refusals
//! that keep the old flags serving, optimistic writes, and two replicas seeing one change.

use std::sync::Arc;
use std::time::Duration;

use flags::source::file::FileSource;
use flags::source::mysql::MysqlSource;
use flags::{Context, FlagError, FlagStore, RouteMode};

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn temp_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("strangler-flags-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("flags.json")
}

#[tokio::test]
async fn file_store_hot_reloads_and_refuses_bad_edits() {
    let path = temp_path("file");
    let source = FileSource::new(&path);
    source
        .put(RouteMode::Monolith.to_flag("route.users", 0, "s"))
        .unwrap();
    let store = Arc::new(FlagStore::new(source.load().unwrap()));
    let watcher = source
        .clone()
        .watch(store.clone(), Duration::from_millis(20));
    let user = Context::new("u1");
    assert_eq!(
        store.evaluate_str("route.users", &user).as_deref(),
        Some("monolith")
    );

    let stored = source
        .put(RouteMode::Service.to_flag("route.users", 0, "s"))
        .unwrap();
    assert_eq!(stored.version, 2);
    eventually("the service flag", || {
        store.evaluate_str("route.users", &user).as_deref() == Some("service")
    })
    .await;

    // A hand edit with a typo is refused with the field and line; the old flags keep serving.
    let generation = store.status().generation;
    std::fs::write(
        &path,
        "{\n  \"flags\": {\n    \"route.users\": {\"key\": \"route.users\", \"on\": true,\n      \"variations\": [\"monolith\"], \"fallthrough\": {\"variaton\": 0}}\n  }\n}\n",
    )
    .unwrap();
    eventually("the refusal", || store.status().last_error.is_some()).await;
    let status = store.status();
    let err = status.last_error.unwrap();
    assert!(
        err.contains("flags.route.users.fallthrough") || err.contains("fallthrough"),
        "{err}"
    );
    assert!(err.contains("line 4"), "{err}");
    assert_eq!(status.generation, generation);
    assert_eq!(
        store.evaluate_str("route.users", &user).as_deref(),
        Some("service")
    );
    // An index out of range is refused as well.
    std::fs::write(
        &path,
        r#"{"flags":{"route.users":{"key":"route.users","on":true,"variations":["monolith"],"fallthrough":{"variation":4}}}}"#,
    )
    .unwrap();
    eventually("the second refusal", || store.status().failed_reloads >= 2).await;
    assert_eq!(
        store.evaluate_str("route.users", &user).as_deref(),
        Some("service")
    );
    watcher.abort();
}

/// Stores `mode` for `key` if its stored version is `expected`, through the audited write path.
async fn set(
    source: &MysqlSource,
    key: &str,
    mode: RouteMode,
    expected: u64,
) -> Result<flags::Flag, FlagError> {
    let note = flags::source::mysql::ChangeNote {
        actor: "test".into(),
        source: "api".into(),
        action: "set_mode".into(),
        subject: key.into(),
        reason: "test".into(),
    };
    source
        .change(
            key,
            Some(expected),
            &note,
            |_| Ok(mode.to_flag(key, 0, "s")),
        )
        .await
        .map(|c| c.after)
}

#[tokio::test]
async fn mysql_store_is_shared_by_replicas_with_optimistic_writes() {
    let db = testkit::monolith_server()
        .create_database("flags")
        .await
        .unwrap();
    let pool = mysql_async::Pool::new(db.url.as_str());
    let source = MysqlSource::new(pool.clone(), "strangler_flags");
    source.ensure_table().await.unwrap();
    let first = set(&source, "route.orders", RouteMode::Monolith, 0)
        .await
        .unwrap();
    assert_eq!(first.version, 1);

    // Two replicas, each with its own store, watching the same table.
    let replicas: Vec<Arc<FlagStore>> = vec![
        Arc::new(FlagStore::new(source.load().await.unwrap())),
        Arc::new(FlagStore::new(source.load().await.unwrap())),
    ];
    let watchers: Vec<_> = replicas
        .iter()
        .map(|r| {
            MysqlSource::new(mysql_async::Pool::new(db.url.as_str()), "strangler_flags")
                .watch(r.clone(), Duration::from_millis(20))
        })
        .collect();

    set(
        &source,
        "route.orders",
        RouteMode::Canary { percent: 100.0 },
        1,
    )
    .await
    .unwrap();
    for r in &replicas {
        eventually("the canary on every replica", || {
            r.evaluate_str("route.orders", &Context::new("u9"))
                .as_deref()
                == Some("service")
        })
        .await;
    }

    // A writer holding a stale version loses, and says so.
    let stale = set(&source, "route.orders", RouteMode::Monolith, 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            stale,
            FlagError::VersionConflict {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{stale}"
    );

    // A corrupt row is refused; replicas keep the last good flags.
    let mut conn = pool.get_conn().await.unwrap();
    use mysql_async::prelude::Queryable;
    conn.query_drop(
        "UPDATE strangler_flags SET definition = '{\"key\":\"route.orders\",\"on\":true}', version = 9",
    )
    .await
    .unwrap();
    for r in &replicas {
        eventually("the refusal", || r.status().last_error.is_some()).await;
        assert_eq!(
            r.evaluate_str("route.orders", &Context::new("u9"))
                .as_deref(),
            Some("service")
        );
    }
    for w in watchers {
        w.abort();
    }
}

#[tokio::test]
async fn changes_are_audited_in_the_same_transaction() {
    use flags::source::mysql::ChangeNote;
    let db = testkit::monolith_server()
        .create_database("flags_audit")
        .await
        .unwrap();
    let source = MysqlSource::new(mysql_async::Pool::new(db.url.as_str()), "strangler_flags");
    source.ensure_table().await.unwrap();
    let seed = flags::FlagSet::new([RouteMode::Monolith.to_flag("route.users", 0, "s")]).unwrap();
    assert_eq!(
        source.seed(&seed, "dev").await.unwrap(),
        vec!["route.users"]
    );
    // Seeding again adds nothing and leaves the stored flag alone.
    assert!(source.seed(&seed, "dev").await.unwrap().is_empty());

    let note = |reason: &str| ChangeNote {
        actor: "alice".into(),
        source: "cli".into(),
        action: "set_mode".into(),
        subject: "users".into(),
        reason: reason.into(),
    };
    let change = source
        .change("route.users", Some(1), &note("canary 10%"), |before| {
            let before = before.expect("seeded");
            Ok(RouteMode::Canary { percent: 10.0 }.to_flag(&before.key, 0, &before.salt))
        })
        .await
        .unwrap();
    assert_eq!(change.after.version, 2);
    assert_eq!(
        RouteMode::of(change.before.as_ref().unwrap()),
        Some(RouteMode::Monolith)
    );

    // A stale expected version is refused and leaves no audit record behind.
    let err = source
        .change("route.users", Some(1), &note("stale"), |_| {
            Ok(RouteMode::Service.to_flag("route.users", 0, "s"))
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, FlagError::VersionConflict { found: 2, .. }),
        "{err}"
    );
    // An edit that produces an invalid flag is refused the same way.
    let err = source
        .change("route.users", None, &note("broken"), |_| {
            let mut f = RouteMode::Service.to_flag("route.users", 0, "s");
            f.fallthrough.variation = Some(7);
            Ok(f)
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("route.users"), "{err}");

    let audit = source.audit(None, 10).await.unwrap();
    assert_eq!(audit.len(), 2, "{audit:?}");
    assert_eq!(audit[0].id, change.audit_id);
    assert_eq!(audit[0].actor, "alice");
    assert_eq!(audit[0].source, "cli");
    assert_eq!(audit[0].reason, "canary 10%");
    assert_eq!(
        RouteMode::of(&audit[0].after),
        Some(RouteMode::Canary { percent: 10.0 })
    );
    assert!(
        audit[0].at.ends_with('Z') && audit[0].at.len() == 24,
        "{}",
        audit[0].at
    );
    assert_eq!(audit[1].source, "seed");
    assert!(audit[1].before.is_none());
    assert_eq!(source.audit(Some("users"), 10).await.unwrap().len(), 1);
    assert!(source.audit(Some("orders"), 10).await.unwrap().is_empty());
}
