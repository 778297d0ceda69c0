//! The whole path on real servers: a registration on user-service writes `user.registered` into
//! its outbox; cdc-sync (direct transport in-process, or through Kafka topics on a real tansu
//! broker) carries the row into notification-service's inbox; notification-service sends the
//! welcome e-mail over SMTP — once, even when the stream replays the event after a restart.

use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::json;
use testkit::contract::{Body, Side};

/// User-service and notification-service on the services server, an SMTP sink, and the
/// services' event stream config (user_svc.outbox → notification_svc.inbox) starting at the
/// binlog position of now, over the direct transport or through Kafka.
struct Env {
    users: Side,
    notifications: Side,
    smtp: testkit::smtp_sink::SmtpSink,
    config: cdc_sync::config::StreamConfig,
    outbox: String,
    offsets_db: String,
}

/// `reader_id` must differ between tests running at once: MariaDB drops a binlog reader when
/// another connects with the same server id.
async fn env(kafka: Option<&str>, reader_id: u32) -> Env {
    let server = testkit::services_server();
    let users_db = server.create_database("user_svc").await.unwrap();
    let notif_db = server.create_database("notification_svc").await.unwrap();
    let mut uc = user_service::Config::default();
    uc.server.database_url = users_db.url.clone();
    let users = Side::serve(user_service::app(user_service::prepare(uc).await.unwrap()))
        .await
        .conforming_to(testkit::openapi::Spec::named("user-service").unwrap());
    let smtp = testkit::smtp_sink::SmtpSink::start().await.unwrap();
    let mut nc = notification_service::Config::default();
    nc.server.database_url = notif_db.url.clone();
    nc.smtp.port = smtp.port;
    nc.delivery.poll_ms = 100;
    let notifications = Side::serve(notification_service::app(
        notification_service::prepare(nc).await.unwrap(),
    ))
    .await
    .conforming_to(testkit::openapi::Spec::named("notification-service").unwrap());

    let mut c = mysql_async::Conn::from_url(server.root_url().as_str())
        .await
        .unwrap();
    let (file, pos): (String, u64) = c
        .query_first("SHOW MASTER STATUS")
        .await
        .unwrap()
        .map(|row: mysql_async::Row| {
            let mut row = row;
            (row.take(0).unwrap(), row.take(1).unwrap())
        })
        .unwrap();
    c.disconnect().await.unwrap();
    let (transport, kafka_section) = match kafka {
        Some(brokers) => (
            "transport = \"kafka\"\n",
            format!("\n[kafka]\nbootstrap_servers = \"{brokers}\"\nresume_from = \"earliest\"\n"),
        ),
        None => ("", String::new()),
    };
    let mut config = cdc_sync::config::StreamConfig::parse(&format!(
        "name = \"events{n}\"\nsource_url = \"{url}\"\ntarget_url = \"{url}\"\nreader_server_id = {id}\n\
         offsets_db = \"cdc_events{n}\"\n{transport}\n[[tables]]\nsource = \"{u}.outbox\"\ntarget = \"{nd}.inbox\"\n{kafka_section}",
        n = notif_db.name,
        url = server.root_url(),
        id = reader_id,
        u = users_db.name,
        nd = notif_db.name,
    ))
    .unwrap();
    config.start_position = Some(format!("{file}:{pos}"));
    Env {
        users,
        notifications,
        smtp,
        config,
        outbox: format!("{}.outbox", users_db.name),
        offsets_db: format!("cdc_events{}", notif_db.name),
    }
}

fn run(
    config: cdc_sync::config::StreamConfig,
) -> (
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<Result<(), cdc_sync::error::CdcError>>,
    cdc_sync::metrics::Metrics,
) {
    let (stop, rx) = tokio::sync::watch::channel(false);
    let metrics = cdc_sync::metrics::Metrics::new(&config.name);
    let m = metrics.clone();
    let task = tokio::spawn(async move { cdc_sync::transport::direct::run(&config, m, rx).await });
    (stop, task, metrics)
}

async fn register(users: &Side, email: &str, name: &str) {
    let (st, v) = users
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": email, "password": "password123", "name": name})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
}

async fn mails(smtp: &testkit::smtp_sink::SmtpSink, n: usize) -> Vec<testkit::smtp_sink::Received> {
    for _ in 0..300 {
        if smtp.messages().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    smtp.messages()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_the_mailbox_through_the_outbox_and_cdc_sync() {
    let Env {
        users,
        smtp,
        config,
        outbox,
        offsets_db,
        ..
    } = env(None, 5301).await;
    let server = testkit::services_server();
    let (stop, task, _) = run(config.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    register(&users, "zoe@shop.test", "Zoe").await;
    let mails = mails(&smtp, 1).await;
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0].to, vec!["zoe@shop.test".to_string()]);
    assert!(mails[0].data.contains("Hello Zoe"), "{}", mails[0].data);

    // The stream stops, forgets its offset and starts again from the same position: the event
    // arrives again and is recognised by its id.
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let mut c = mysql_async::Conn::from_url(server.root_url().as_str())
        .await
        .unwrap();
    c.query_drop(format!("DELETE FROM `{offsets_db}`.cdc_offsets"))
        .await
        .ok();
    c.disconnect().await.unwrap();
    let (stop, task, metrics) = run(config);
    for _ in 0..50 {
        if metrics
            .events
            .with_label_values(&[&outbox, "applied"])
            .get()
            >= 1
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metrics
            .events
            .with_label_values(&[&outbox, "applied"])
            .get(),
        1,
        "the event was carried again"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "the replayed event sent a second e-mail"
    );
    let _ = stop.send(true);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_path_through_kafka_sends_once_across_a_restart() {
    let broker = testkit::Tansu::start().unwrap();
    let Env {
        users,
        smtp,
        config,
        outbox,
        ..
    } = env(Some(&broker.bootstrap_servers()), 5302).await;
    let (stop, task, _) = run(config.clone());
    // Let it create its topics and join its group before the first event.
    tokio::time::sleep(Duration::from_secs(2)).await;
    register(&users, "ada@shop.test", "Ada").await;
    let first = mails(&smtp, 1).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].to, vec!["ada@shop.test".to_string()]);

    // A restart resumes from the committed offsets: nothing sent twice, and the next
    // registration goes through.
    let _ = stop.send(true);
    task.await.unwrap().unwrap();
    let (stop, task, metrics) = run(config);
    tokio::time::sleep(Duration::from_secs(2)).await;
    register(&users, "grace@shop.test", "Grace").await;
    let both = mails(&smtp, 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = smtp.messages();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(all[1].to, vec!["grace@shop.test".to_string()]);
    assert_eq!(both.len(), 2);
    assert!(
        metrics
            .events
            .with_label_values(&[&outbox, "applied"])
            .get()
            <= 1,
        "the first event was applied again after the restart"
    );
    let _ = stop.send(true);
    let _ = task.await;
}

/// `GET /api/notifications` answers as the monolith's: same page shape, same items (channel,
/// template, payload) for the same story, same errors. Compared without `status` and `sent_at`:
/// the monolith only queues (`pending`, never sent) while notification-service sends — the
/// reason the service exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_notifications_list_answers_as_the_monolith() {
    let db = testkit::monolith_server()
        .create_database("shop_notif")
        .await
        .unwrap();
    let monolith = Side::serve(legacy_monolith::app(
        legacy_monolith::prepare(legacy_monolith::Config {
            database_url: db.url.clone(),
            ..legacy_monolith::Config::default()
        })
        .await
        .unwrap(),
    ))
    .await
    .conforming_to(testkit::openapi::Spec::named("legacy-monolith").unwrap());
    let Env {
        users,
        notifications,
        smtp,
        config,
        ..
    } = env(None, 5303).await;
    let (stop, task, _) = run(config);
    tokio::time::sleep(Duration::from_millis(500)).await;

    register(&monolith, "mae@shop.test", "Mae").await;
    register(&users, "mae@shop.test", "Mae").await;
    assert_eq!(mails(&smtp, 1).await.len(), 1);
    let (tm, ts) = (
        monolith.login("mae@shop.test").await,
        users.login("mae@shop.test").await,
    );
    let without_delivery = |(st, mut v): (u16, serde_json::Value)| {
        for item in v["items"].as_array_mut().into_iter().flatten() {
            let item = item.as_object_mut().unwrap();
            item.remove("status");
            item.remove("sent_at");
        }
        (st, v)
    };
    let cases: [(&str, &str, Option<&str>, Option<&str>); 5] = [
        ("own list", "/api/notifications", Some(&tm), Some(&ts)),
        (
            "second page",
            "/api/notifications?page=2&per_page=1",
            Some(&tm),
            Some(&ts),
        ),
        ("no token", "/api/notifications", None, None),
        (
            "bad page size",
            "/api/notifications?per_page=0",
            Some(&tm),
            Some(&ts),
        ),
        (
            "page not a number",
            "/api/notifications?page=abc",
            Some(&tm),
            Some(&ts),
        ),
    ];
    let mut diffs = Vec::new();
    for (name, path, token_m, token_s) in cases {
        let a = without_delivery(monolith.call("GET", path, token_m, Body::None).await);
        let b = without_delivery(notifications.call("GET", path, token_s, Body::None).await);
        if name == "own list" {
            assert_eq!(a.1["items"].as_array().map(Vec::len), Some(1), "{}", a.1);
            assert_eq!(b.1["items"][0]["template"], "welcome", "{}", b.1);
        }
        diffs.extend(testkit::contract::differences(
            name,
            &a,
            &b,
            &["id", "created_at"],
        ));
    }
    assert!(diffs.is_empty(), "{}", diffs.join("\n"));
    monolith.assert_conformance(5);
    notifications.assert_conformance(5);
    users.assert_conformance(2);
    // And the service did deliver: its copy says so.
    let (_, v) = notifications
        .call("GET", "/api/notifications", Some(&ts), Body::None)
        .await;
    assert_eq!(v["items"][0]["status"], "sent", "{v}");
    let _ = stop.send(true);
    let _ = task.await;
}
