//! The ownership switch (Vitess SwitchTraffic's idea, for HTTP): hold the domain's new writes on
//! every proxy replica, wait until none is in flight, mark the old owner's binlog and wait until
//! the stream that drains it has applied past the mark, flip the domain's flag, release. Any step
//! past its bound aborts: the flag is put back and the held writes go where they would have gone.

use std::time::{Duration, Instant};

use cdc_sync::model::transaction::position_key;
use mysql_async::prelude::Queryable;
use serde::Serialize;

use crate::proxies::{Proxies, ProxyError};

/// Where the switch acts and how long each step may take.
#[derive(Debug, Clone)]
pub struct Switch {
    /// The domain's flag and the name of one of its routes (the admin API sets modes by route).
    pub flag: String,
    pub route: String,
    /// The mode to serve after the switch: `service`, `monolith`, or a write canary's new
    /// percentage (the users between the two percentages change sides).
    pub to_mode: flags::RouteMode,
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
    proxies: Proxies,
    switch: &'a Switch,
}

impl From<ProxyError> for SwitchError {
    fn from(e: ProxyError) -> Self {
        SwitchError::Proxy {
            proxy: e.proxy,
            message: e.message,
        }
    }
}

impl Admin<'_> {
    async fn call(
        &self,
        method: reqwest::Method,
        proxy: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, SwitchError> {
        Ok(self.proxies.call(method, proxy, path, body).await?)
    }

    async fn hold_all(&self) -> Result<(), SwitchError> {
        let body = serde_json::json!({
            "max_ms": self.switch.hold.as_millis() as u64,
            "reason": self.switch.reason,
        });
        for p in &self.proxies.urls {
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
        for p in &self.proxies.urls {
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

    async fn set_mode(&self, mode: flags::RouteMode) -> Result<(), SwitchError> {
        let proxy = &self.proxies.urls[0];
        let mut body = serde_json::json!({"mode": mode.name(), "reason": self.switch.reason});
        if matches!(
            mode,
            flags::RouteMode::Canary { .. } | flags::RouteMode::WriteCanary { .. }
        ) {
            body["percent"] = serde_json::json!(mode.percent());
        }
        self.call(
            reqwest::Method::PUT,
            proxy,
            &format!("/admin/routes/{}/mode", self.switch.route),
            Some(body),
        )
        .await?;
        // Every replica must serve the new mode before the writes go on.
        for p in &self.proxies.urls {
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
                if v["mode"] == mode.name() && v["percent"].as_f64() == Some(mode.percent()) {
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

    async fn mode(&self) -> Result<Option<flags::RouteMode>, SwitchError> {
        let v = self
            .call(
                reqwest::Method::GET,
                &self.proxies.urls[0],
                &format!("/admin/routes/{}", self.switch.route),
                None,
            )
            .await?;
        Ok(mode_of(&v))
    }
}

/// Runs the switch; on failure the previous mode is back and the holds are released.
pub async fn switch(s: &Switch) -> Result<SwitchReport, SwitchError> {
    let admin = Admin {
        proxies: Proxies::new(s.proxies.clone(), s.admin_token.clone())
            .resolved()
            .await?,
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
            if let Some(before) = before
                && admin.mode().await.ok().flatten() != Some(before)
            {
                let _ = admin.set_mode(before).await;
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
    for p in &admin.proxies.urls {
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
    // 2–3. Every write acknowledged before now is before a mark the draining stream applied.
    let drain = Drain {
        source_url: s.old_owner_url.clone(),
        stream: s.stream.clone(),
        target_url: s.stream_target_url.clone(),
        offsets_db: s.offsets_db.clone(),
    };
    let mark = catch_up(&drain, &s.flag, s.catch_up).await?.mark;
    let caught_up_ms = started.elapsed().as_millis() as u64;
    // 4. Flip; the release follows in `switch`.
    admin.set_mode(s.to_mode).await?;
    Ok((mark, drained_ms, caught_up_ms))
}

/// A route's mode as `GET /admin/routes/{name}` shows it (`None` for a hand-made flag).
pub fn mode_of(route: &serde_json::Value) -> Option<flags::RouteMode> {
    let mode = route["mode"].as_str()?;
    let percent = matches!(mode, "canary" | "write-canary")
        .then(|| route["percent"].as_f64())
        .flatten();
    flags::RouteMode::parse(mode, percent).ok()
}

/// A stream draining one side's writes into the other.
#[derive(Debug, Clone)]
pub struct Drain {
    /// The side it reads (root or a user that may write `strangler_switch`).
    pub source_url: String,
    pub stream: String,
    /// The side it applies to, where its `offsets_db.cdc_offsets` is.
    pub target_url: String,
    pub offsets_db: String,
}

/// How a stream caught up with a mark.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CaughtUp {
    /// The source's binlog position marked, `file:pos`.
    pub mark: String,
    pub ms: u64,
}

/// Marks the source's binlog now (a row `tag` in `strangler_switch.marks`) and waits up to
/// `bound` until the stream has applied past the mark: everything written before the call is
/// then on the target. The mark is beaten again while waiting, since an idle stream stores its
/// offset only every `IDLE_OFFSET_EVERY`.
pub async fn catch_up(d: &Drain, tag: &str, bound: Duration) -> Result<CaughtUp, SwitchError> {
    let owner = mysql_async::Pool::new(
        mysql_async::Opts::from_url(&d.source_url).map_err(mysql_async::Error::from)?,
    );
    let target = mysql_async::Pool::new(
        mysql_async::Opts::from_url(&d.target_url).map_err(mysql_async::Error::from)?,
    );
    let result = mark_and_wait(d, tag, bound, &owner, &target).await;
    let _ = owner.disconnect().await;
    let _ = target.disconnect().await;
    result
}

async fn mark_and_wait(
    d: &Drain,
    tag: &str,
    bound: Duration,
    owner: &mysql_async::Pool,
    target: &mysql_async::Pool,
) -> Result<CaughtUp, SwitchError> {
    let started = Instant::now();
    let mut conn = owner.get_conn().await?;
    conn.query_drop("CREATE DATABASE IF NOT EXISTS strangler_switch")
        .await?;
    conn.query_drop(
        "CREATE TABLE IF NOT EXISTS strangler_switch.marks \
         (flag VARCHAR(200) NOT NULL PRIMARY KEY, at DATETIME(6) NOT NULL)",
    )
    .await?;
    let beat = "REPLACE INTO strangler_switch.marks VALUES (?, UTC_TIMESTAMP(6))";
    conn.exec_drop(beat, (tag,)).await?;
    let head = cdc_sync::source::binlog::BinlogSource::current_position(owner, Default::default())
        .await
        .map_err(|e| SwitchError::Position(e.to_string()))?;
    let mark = format!("{}:{}", head.file, head.pos);
    let mut tconn = target.get_conn().await?;
    let sql = format!(
        "SELECT file, pos FROM `{}`.cdc_offsets WHERE stream = ?",
        d.offsets_db.replace('`', "``")
    );
    let mut last_beat = Instant::now();
    loop {
        // A stream that never applied anything has no offsets table yet: nothing applied.
        let applied: Option<(String, u64)> = match tconn.exec_first(&sql, (&d.stream,)).await {
            Err(mysql_async::Error::Server(e)) if e.code == 1146 => None,
            other => other?,
        };
        if let Some((file, pos)) = &applied
            && position_key(file, *pos) >= position_key(&head.file, head.pos)
        {
            break;
        }
        if started.elapsed() > bound {
            return Err(SwitchError::CatchUp {
                stream: d.stream.clone(),
                mark,
                applied: applied.map_or("nothing".into(), |(f, p)| format!("{f}:{p}")),
                ms: started.elapsed().as_millis() as u64,
            });
        }
        if last_beat.elapsed() > cdc_sync::transport::direct::IDLE_OFFSET_EVERY {
            conn.exec_drop(beat, (tag,)).await?;
            last_beat = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(CaughtUp {
        mark,
        ms: started.elapsed().as_millis() as u64,
    })
}
