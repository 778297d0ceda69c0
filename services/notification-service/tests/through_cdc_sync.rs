//! The whole path on real servers: a registration on user-service writes `user.registered` into
//! its outbox; cdc-sync (direct transport, in-process) carries the row into notification-service's
//! inbox; notification-service sends the welcome e-mail over SMTP — once, even when the stream
//! replays the event after a restart.

use std::time::Duration;

use mysql_async::prelude::*;
use serde_json::json;
use testkit::contract::{Body, Side};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_reaches_the_mailbox_through_the_outbox_and_cdc_sync() {
    let server = testkit::services_server();
    let users_db = server.create_database("user_svc").await.unwrap();
    let notif_db = server.create_database("notification_svc").await.unwrap();
    let mut uc = user_service::Config::default();
    uc.server.database_url = users_db.url.clone();
    let users = Side::serve(user_service::app(user_service::prepare(uc).await.unwrap())).await;
    let smtp = testkit::smtp_sink::SmtpSink::start().await.unwrap();
    let mut nc = notification_service::Config::default();
    nc.server.database_url = notif_db.url.clone();
    nc.smtp.port = smtp.port;
    nc.delivery.poll_ms = 100;
    let _notifications = notification_service::prepare(nc).await.unwrap();

    // The services' event stream: user_svc.outbox → notification_svc.inbox, on the same server,
    // from the binlog position of now.
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
    let mut config = cdc_sync::config::StreamConfig::parse(&format!(
        "name = \"events{pid}\"\nsource_url = \"{url}\"\ntarget_url = \"{url}\"\nreader_server_id = 5301\n\
         offsets_db = \"cdc_events{pid}\"\n\n[[tables]]\nsource = \"{u}.outbox\"\ntarget = \"{n}.inbox\"\n",
        pid = std::process::id(),
        url = server.root_url(),
        u = users_db.name,
        n = notif_db.name,
    ))
    .unwrap();
    config.start_position = Some(format!("{file}:{pos}"));
    let run = |config: cdc_sync::config::StreamConfig| {
        let (stop, rx) = tokio::sync::watch::channel(false);
        let metrics = cdc_sync::metrics::Metrics::new(&config.name);
        let m = metrics.clone();
        let task = tokio::spawn(async move { cdc_sync::pipeline::run(&config, m, rx).await });
        (stop, task, metrics)
    };
    let outbox = format!("{}.outbox", users_db.name);
    let (stop, task, _) = run(config.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let (st, v) = users
        .call(
            "POST",
            "/api/users/register",
            None,
            Body::Json(json!({"email": "zoe@shop.test", "password": "password123", "name": "Zoe"})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    for _ in 0..150 {
        if !smtp.messages().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mails = smtp.messages();
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
    c.query_drop(format!(
        "DELETE FROM `cdc_events{}`.cdc_offsets",
        std::process::id()
    ))
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
