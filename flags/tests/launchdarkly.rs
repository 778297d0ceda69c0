//! The LaunchDarkly source with the real SDK against a local server speaking LaunchDarkly's
//! streaming protocol: the same bucket as the embedded store for the same definition, patches and
//! deletes, a stream gone silent and reopened, and LaunchDarkly unreachable at start and later.

use std::sync::Arc;
use std::time::{Duration, Instant};

use flags::source::launchdarkly::{LaunchDarkly, LdSettings};
use flags::{Context, Flag, FlagStore, Rollout, RouteMode, Target, WeightedVariation, evaluate};
use serde_json::Value;
use testkit::launchdarkly::LdServer;

const KEY: &str = "sdk-test-key";

fn settings(url: String) -> LdSettings {
    LdSettings {
        sdk_key: KEY.into(),
        base_url: Some(url),
        read_timeout: Duration::from_secs(1),
        reconnect_delay: Duration::from_millis(100),
        connect_timeout: Duration::from_millis(500),
    }
}

fn json(flag: &Flag) -> Value {
    serde_json::to_value(flag).unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_lands_in_the_same_bucket_on_both_backends() {
    let mut seeded = RouteMode::Canary { percent: 50.0 }.to_flag("route.seeded", 3, "unused");
    seeded.fallthrough.rollout.as_mut().unwrap().seed = Some(61);
    let mut targeted = RouteMode::Canary { percent: 20.0 }.to_flag("route.targeted", 1, "t");
    targeted.targets = vec![Target {
        values: vec!["vip-1".into(), "vip-2".into()],
        variation: 1,
    }];
    let mut three_way = RouteMode::Monolith.to_flag("route.three", 1, "3w");
    three_way.fallthrough.variation = None;
    three_way.fallthrough.rollout = Some(Rollout {
        variations: vec![
            WeightedVariation {
                variation: 0,
                weight: 33_333,
            },
            WeightedVariation {
                variation: 2,
                weight: 33_333,
            },
            WeightedVariation {
                variation: 1,
                weight: 33_334,
            },
        ],
        bucket_by: None,
        seed: None,
    });
    let definitions = vec![
        RouteMode::Canary { percent: 37.5 }.to_flag("route.orders", 7, "orders-salt"),
        RouteMode::Canary { percent: 0.5 }.to_flag("route.tiny", 2, "tiny"),
        seeded,
        targeted,
        three_way,
    ];
    let server = LdServer::start(
        "127.0.0.1:0".parse().unwrap(),
        KEY,
        definitions.iter().map(json).collect(),
        Duration::from_millis(200),
    )
    .await;
    let mirror = Arc::new(FlagStore::default());
    let ld = LaunchDarkly::start(&settings(server.url()), mirror.clone()).unwrap();
    assert!(
        ld.wait_initialized(Duration::from_secs(10)).await,
        "never initialized"
    );

    for flag in &definitions {
        let mut on_service = 0;
        for i in 0..2000 {
            let user = if i < 2 {
                format!("vip-{}", i + 1)
            } else {
                format!("user-{i}")
            };
            let embedded = evaluate(flag, &Context::new(&user));
            let embedded = embedded.value.and_then(Value::as_str).unwrap();
            let remote = ld.variation(&flag.key, &user, "default");
            assert_eq!(remote, embedded, "{} for {user}", flag.key);
            on_service += usize::from(remote == "service");
        }
        // Not a vacuous comparison: the rollouts really split the users.
        if flag.key == "route.orders" {
            assert!((650..850).contains(&on_service), "{on_service}");
        }
    }
    // The mirror holds the same definitions, read as route modes.
    let set = mirror.snapshot();
    assert_eq!(
        RouteMode::of(set.get("route.orders").unwrap()),
        Some(RouteMode::Canary { percent: 37.5 })
    );
    assert_eq!(set.get("route.orders").unwrap().version, 7);
    ld.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patches_deletes_and_a_stream_gone_silent() {
    let server = LdServer::start(
        "127.0.0.1:0".parse().unwrap(),
        KEY,
        vec![json(&RouteMode::Monolith.to_flag("route.users", 1, "s"))],
        Duration::from_millis(200),
    )
    .await;
    let mirror = Arc::new(FlagStore::default());
    let ld = LaunchDarkly::start(&settings(server.url()), mirror.clone()).unwrap();
    assert!(ld.wait_initialized(Duration::from_secs(10)).await);
    assert_eq!(ld.variation("route.users", "u1", "default"), "monolith");
    assert!(ld.stream_status().connected);

    server.patch(json(&RouteMode::Service.to_flag("route.users", 2, "s")));
    eventually("the patch", || {
        ld.variation("route.users", "u1", "default") == "service"
    })
    .await;
    eventually("the mirror", || {
        mirror
            .snapshot()
            .get("route.users")
            .is_some_and(|f| RouteMode::of(f) == Some(RouteMode::Service))
    })
    .await;

    server.delete("route.users", 3);
    eventually("the delete", || {
        ld.variation("route.users", "u1", "default") == "default"
    })
    .await;
    eventually("the mirror delete", || {
        mirror.snapshot().get("route.users").is_none()
    })
    .await;

    // The open stream goes silent: no heartbeat, no event. The change made meanwhile arrives
    // once the client has given up on the silent stream and opened a new one.
    server.patch(json(&RouteMode::Shadow.to_flag("route.users", 4, "s")));
    eventually("the shadow patch", || {
        ld.variation("route.users", "u1", "default") == "shadow"
    })
    .await;
    assert_eq!(server.connections(), 1);
    server.silence_open_streams();
    server.patch(json(&RouteMode::Service.to_flag("route.users", 5, "s")));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        ld.variation("route.users", "u1", "default"),
        "shadow",
        "silenced"
    );
    eventually("a reconnect", || server.connections() >= 2).await;
    eventually("the missed change", || {
        ld.variation("route.users", "u1", "default") == "service"
    })
    .await;
    let status = ld.stream_status();
    assert!(
        status.connected && status.connects >= 2 && status.failures >= 1,
        "{status:?}"
    );
    ld.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_at_start_serves_defaults_and_later_keeps_the_last_flags() {
    let port = testkit::free_port();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mirror = Arc::new(FlagStore::default());
    let ld = LaunchDarkly::start(&settings(format!("http://{addr}")), mirror.clone()).unwrap();
    assert!(!ld.wait_initialized(Duration::from_millis(700)).await);
    // Nothing known yet: the caller's safe default.
    assert_eq!(ld.variation("route.users", "u1", "monolith"), "monolith");
    let status = ld.stream_status();
    assert!(!status.connected && status.failures >= 1, "{status:?}");
    assert!(status.last_error.is_some());

    // LaunchDarkly comes up: the client connects on its own.
    let server = LdServer::start(
        addr,
        KEY,
        vec![json(&RouteMode::Service.to_flag("route.users", 1, "s"))],
        Duration::from_millis(200),
    )
    .await;
    eventually("initialization", || ld.initialized()).await;
    assert_eq!(ld.variation("route.users", "u1", "monolith"), "service");

    // LaunchDarkly goes away: the last known flags keep serving.
    server.stop();
    eventually("the loss noticed", || !ld.stream_status().connected).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ld.variation("route.users", "u1", "monolith"), "service");
    assert!(ld.initialized());
    ld.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sdk_key_is_refused_and_said() {
    let server = LdServer::start(
        "127.0.0.1:0".parse().unwrap(),
        KEY,
        vec![],
        Duration::from_millis(200),
    )
    .await;
    let mut s = settings(server.url());
    s.sdk_key = "wrong-key".into();
    let ld = LaunchDarkly::start(&s, Arc::new(FlagStore::default())).unwrap();
    assert!(!ld.wait_initialized(Duration::from_secs(2)).await);
    let status = ld.stream_status();
    assert!(status.last_error.unwrap_or_default().contains("401"));
    s.sdk_key = " ".into();
    assert!(LaunchDarkly::start(&s, Arc::new(FlagStore::default())).is_err());
}
