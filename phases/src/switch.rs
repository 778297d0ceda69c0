//! The ownership switch (Vitess SwitchTraffic's idea, for HTTP): hold the domain's new writes on
//! every proxy replica, wait until none is in flight, mark the old owner's binlog and wait until
//! the stream that drains it has applied past the mark, flip the domain's flag, release. Any step
//! past its bound aborts: the flag is put back and the held writes go where they would have gone.

use std::time::{Duration, Instant};

use cdc_sync::model::transaction::position_key;
use mysql_async::prelude::Queryable;
use serde::Serialize;

/// Where the switch acts and how long each step may take.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The domain's flag and the name of one of its routes (the admin API sets modes by route).
    pub flag: String,
    pub route: String,
    /// The mode to serve after the switch: `service` or `monolith`.
    pub to_mode: String,
    /// Every proxy replica's admin API (`http://host:port`), and its operator token if any.
    pub proxies: Vec<String>,
    pub admin_token: Option<String>,
    /// The old owner's server (root or a user that may write `strangler_switch`), whose binlog
    /// the draining stream reads.
    pub old_owner_url: String,
    /// The draining stream: its name, and the `offsets_db` of its target server.
    pub stream: String,
    pub stream_target_url: String,
    pub offsets_db: String,
    /// Longest hold of the writes (the proxies end it by themselves after this).
    pub hold: Duration,
    /// Longest wait for the writes in flight to finish.
    pub drain: Duration,
    /// Longest wait for the stream to apply past the mark.
    pub catch_up: Duration,
    pub actor: String,
    pub reason: String,
}

/// What a switch took.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SwitchReport {
    /// From the hold to the release: what a held write waited at most.
    pub paused_ms: u64,
    /// Writes waiting on the replicas when they were released.
    pub released_writes: i64,
    /// The old owner's binlog position marked, `file:pos`.
    pub mark: String,
    pub drained_ms: u64,
    pub caught_up_ms: u64,
}

/// Why a switch did not happen (the previous state is back).
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    #[error("proxy {proxy}: {message}")]
    Proxy { proxy: String, message: String },
    #[error(
        "{inflight} write(s) still in flight on {proxy} after {ms} ms; switch aborted, nothing changed"
    )]
    Drain {
        proxy: String,
        inflight: i64,
        ms: u64,
    },
    #[error(
        "stream {stream} had not applied past {mark} after {ms} ms (at {applied}); switch aborted, the flag is back"
    )]
    CatchUp {
        stream: String,
        mark: String,
        applied: String,
        ms: u64,
    },
    #[error("database: {0}")]
    Db(#[from] mysql_async::Error),
    #[error("binlog position: {0}")]
    Position(String),
}

struct Admin<'a> {
    http: reqwest::Client,
    switch: &'a Switch,
}

impl Admin<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        proxy: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, SwitchError> {
        let mut req = self
            .http
            .request(method, format!("{proxy}{path}"))
            .header("x-strangler-source", "cli")
            .timeout(Duration::from_secs(5));
        if let Some(t) = &self.switch.admin_token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let fail = |message: String| SwitchError::Proxy {
            proxy: proxy.to_string(),
            message,
        };
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await.map_err(|e| fail(e.to_string()))?;
        if !status.is_success() {
            return Err(fail(format!("{status}: {value}")));
        }
        Ok(value)
    }

    async fn hold_all(&self) -> Result<(), SwitchError> {
        let body = serde_json::json!({
            "max_ms": self.switch.hold.as_millis() as u64,
            "reason": self.switch.reason,
        });
        for p in &self.switch.proxies {
            self.call(
                reqwest::Method::POST,
                p,
                &format!("/admin/holds/{}", self.switch.flag),
                Some(body.clone()),
            )
            .await?;
        }
        Ok(())
    }

    /// Releases every replica; the number of writes that were waiting.
    async fn release_all(&self) -> i64 {
        let mut waiting = 0;
        for p in &self.switch.proxies {
            let path = format!("/admin/holds/{}", self.switch.flag);
            if let Ok(v) = self.call(reqwest::Method::GET, p, &path, None).await {
                waiting += v["hold"]["waiting"].as_i64().unwrap_or(0);
            }
            let _ = self.call(reqwest::Method::DELETE, p, &path, None).await;
        }
        waiting
    }

    async fn inflight(&self, proxy: &str) -> Result<i64, SwitchError> {
        let v = self
            .call(
                reqwest::Method::GET,
                proxy,
                &format!("/admin/holds/{}", self.switch.flag),
                None,
            )
            .await?;
        Ok(v["hold"]["inflight"].as_i64().unwrap_or(0))
    }

    async fn set_mode(&self, mode: &str) -> Result<(), SwitchError> {
        let proxy = &self.switch.proxies[0];
        self.call(
            reqwest::Method::PUT,
            proxy,
            &format!("/admin/routes/{}/mode", self.switch.route),
            Some(serde_json::json!({"mode": mode, "reason": self.switch.reason})),
        )
        .await?;
        // Every replica must serve the new mode before the writes go on.
        for p in &self.switch.proxies {
            let started = Instant::now();
            loop {
                let v = self
                    .call(
                        reqwest::Method::GET,
                        p,
                        &format!("/admin/routes/{}", self.switch.route),
                        None,
                    )
                    .await?;
                if v["mode"] == mode {
                    break;
                }
                if started.elapsed() > Duration::from_secs(5) {
                    return Err(SwitchError::Proxy {
                        proxy: p.clone(),
                        message: format!("still serves {} after 5 s", v["mode"]),
                    });
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        Ok(())
    }

    async fn mode(&self) -> Result<String, SwitchError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &self.switch.proxies[0],
                &format!("/admin/routes/{}", self.switch.route),
                None,
            )
            .await?;
        Ok(v["mode"].as_str().unwrap_or("monolith").to_string())
    }
}

/// Runs the switch; on failure the previous mode is back and the holds are released.
pub async fn switch(s: &Switch) -> Result<SwitchReport, SwitchError> {
    let admin = Admin {
        http: reqwest::Client::new(),
        switch: s,
    };
    let before = admin.mode().await?;
    let started = Instant::now();
    admin.hold_all().await?;
    let result = drain_and_flip(&admin, s, started).await;
    let released_writes = admin.release_all().await;
    let paused_ms = started.elapsed().as_millis() as u64;
    match result {
        Ok((mark, drained_ms, caught_up_ms)) => Ok(SwitchReport {
            paused_ms,
            released_writes,
            mark,
            drained_ms,
            caught_up_ms,
        }),
        Err(e) => {
            if admin.mode().await.ok().as_deref() != Some(before.as_str()) {
                let _ = admin.set_mode(&before).await;
            }
            Err(e)
        }
    }
}

async fn drain_and_flip(
    admin: &Admin<'_>,
    s: &Switch,
    started: Instant,
) -> Result<(String, u64, u64), SwitchError> {
    // 1. No write of the domain in flight on any replica.
    for p in &s.proxies {
        loop {
            let n = admin.inflight(p).await?;
            if n == 0 {
                break;
            }
            if started.elapsed() > s.drain {
                return Err(SwitchError::Drain {
                    proxy: p.clone(),
                    inflight: n,
                    ms: started.elapsed().as_millis() as u64,
                });
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let drained_ms = started.elapsed().as_millis() as u64;
    // 2. Mark the old owner's binlog: every write acknowledged before now is before the mark.
    let owner = mysql_async::Pool::new(
        mysql_async::Opts::from_url(&s.old_owner_url).map_err(mysql_async::Error::from)?,
    );
    let mut conn = owner.get_conn().await?;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS strangler_switch")
        .await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS strangler_switch.marks \
         (flag VARCHAR(200) NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL)",
    )
    .await?;
    let beat = "REPLACE INTO strangler_switch.marks VALUES (?, UTC_TIMESTAMP(6))";
    conn.exec_drop(beat, (&s.flag,)).await?;
    let head = cdc_sync::source::binlog::BinlogSource::current_position(&owner, Default::default())
        .await
        .map_err(|e| SwitchError::Position(e.to_string()))?;
    let mark = format!("{}:{}", head.file, head.pos);
    // 3. The draining stream applied past the mark. It stores its offset for other activity
    // every `IDLE_OFFSET_EVERY`, so the mark is beaten again while waiting.
    let target = mysql_async::Pool::new(
        mysql_async::Opts::from_url(&s.stream_target_url).map_err(mysql_async::Error::from)?,
    );
    let mut tconn = target.get_conn().await?;
    let sql = format!(
        "SELECT file, pos FROM `{}`.cdc_offsets WHERE stream = ?",
        s.offsets_db.replace('`', "``")
    );
    let waiting = Instant::now();
    let mut last_beat = Instant::now();
    loop {
        // A stream that never applied anything has no offsets table yet: nothing applied.
        let applied: Option<(String, u64)> = match tconn.exec_first(&sql, (&s.stream,)).await {
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => None,
            other => other?,
        };
        if let Some((file, pos)) = &applied
            && position_key(file, *pos) >= position_key(&head.file, head.pos)
        {
            break;
        }
        if waiting.elapsed() > s.catch_up {
            return Err(SwitchError::CatchUp {
                stream: s.stream.clone(),
                mark,
                applied: applied.map_or("nothing".into(), |(f, p)| format!("{f}:{p}")),
                ms: waiting.elapsed().as_millis() as u64,
            });
        }
        if last_beat.elapsed() > cdc_sync::transport::direct::IDLE_OFFSET_EVERY {
            conn.exec_drop(beat, (&s.flag,)).await?;
            last_beat = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let caught_up_ms = started.elapsed().as_millis() as u64;
    // 4. Flip; the release follows in `switch`.
    admin.set_mode(&s.to_mode).await?;
    drop(conn);
    owner.disconnect().await?;
    drop(tconn);
    target.disconnect().await?;
    Ok((mark, drained_ms, caught_up_ms))
}
