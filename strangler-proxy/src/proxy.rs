//! The data plane: Pingora's `ProxyHttp`. One place decides where a request goes — the routing
//! table and flag snapshot taken at its start — and the hooks around it handle limits, request
//! ids, sticky user keys, fallback to the monolith, the breaker, shadow capture and metrics.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use flags::{Context, RouteMode, evaluate};
use http::header::{CONTENT_LENGTH, HOST};
use http::{HeaderName, HeaderValue};
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::upstreams::peer::HttpPeer;
use pingora::{Error, ErrorType};

use crate::control::Control;
use crate::header_edit::{self, Edit};
use crate::routing::RoutingTable;
use crate::shadow::ShadowJob;
use crate::user_key::UserKey;

// Ready `HeaderName`s skip parsing the name on every request; statics, so that the
// case-keeping path can pass Pingora their names as `&'static str`.
static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_STRANGLER_BACKEND: HeaderName = HeaderName::from_static("x-strangler-backend");
static SET_COOKIE: HeaderName = http::header::SET_COOKIE;

/// The proxy service.
pub struct StranglerProxy {
    pub control: Arc<Control>,
    pub shadow_tx: tokio::sync::mpsc::Sender<ShadowJob>,
}

/// Captured monolith answer for a shadow comparison.
#[derive(Default)]
pub struct ShadowCapture {
    request_body: BytesMut,
    status: u16,
    headers: Vec<(String, String)>,
    body: BytesMut,
    truncated: bool,
}

/// Per-request state, boxed: Pingora keeps the context inside each request's futures, which
/// are moved into heap boxes as they start, so a pointer here is copied instead of the fields.
pub type Ctx = Box<RequestState>;

/// What a request carries from hook to hook.
#[derive(Default)]
pub struct RequestState {
    table: Option<Arc<RoutingTable>>,
    route: Option<usize>,
    to_service: bool,
    /// The route's monolith side is retired: the service answers, whatever happens.
    retired: bool,
    /// A write the service owns (service mode, or a write canary's user): never sent to the
    /// monolith, which does not own it.
    owned_write: bool,
    fallback: Option<&'static str>,
    /// The route's mode, as an index into `metrics::MODES`.
    mode: usize,
    on_service: bool,
    /// The request id and trace context, shared (cheap to clone) by every upstream attempt and
    /// the response.
    ids: Option<crate::trace::Ids>,
    set_cookie: Option<String>,
    started: Option<Instant>,
    response_started: bool,
    /// The upstream failed a write that may have been applied: not retried, and the client is
    /// told so.
    not_retried: bool,
    /// Attempts retried on the service because a pooled connection had gone stale.
    stale_retries: u8,
    body_bytes: usize,
    status: u16,
    shadow: Option<Box<ShadowCapture>>,
    /// A write request, counted in flight for its flag's hold until the request is done.
    write: Option<crate::hold::InFlight>,
}

impl RequestState {
    fn route<'a>(&self, table: &'a RoutingTable) -> Option<&'a crate::routing::Route> {
        self.route.map(|i| &table.routes[i])
    }
}

/// `metrics::MODES[CANARY]` is `canary`.
const CANARY: usize = 2;

/// The mode's index in `metrics::MODES`.
fn mode_index(mode: Option<RouteMode>) -> usize {
    match mode {
        Some(RouteMode::Monolith) | None => 0,
        Some(RouteMode::Shadow) => 1,
        Some(RouteMode::Canary { .. } | RouteMode::WriteCanary { .. }) => CANARY,
        Some(RouteMode::Service) => 3,
    }
}

/// A flag's answer as one of the sides a request can take; `service-writes` (a write canary's
/// user) is the service, for writes too.
fn side(value: &str) -> (&'static str, bool) {
    match value {
        "service" => ("service", false),
        "service-writes" => ("service", true),
        "shadow" => ("shadow", false),
        _ => ("monolith", false),
    }
}

/// Writes `n` in decimal at the start of `out`; returns the digits written.
fn push_decimal(out: &mut [u8], n: u8) -> usize {
    let mut len = 0;
    if n >= 100 {
        out[len] = b'0' + n / 100;
        len += 1;
    }
    if n >= 10 {
        out[len] = b'0' + (n / 10) % 10;
        len += 1;
    }
    out[len] = b'0' + n % 10;
    len + 1
}

/// `X-Forwarded-For` with `ip` appended to the addresses already there. The usual case (no
/// earlier proxy, IPv4) is written on the stack: one allocation, no formatting machinery.
fn forwarded_for(prev: Option<&HeaderValue>, ip: std::net::IpAddr) -> HeaderValue {
    match (prev, ip) {
        (None, std::net::IpAddr::V4(v4)) => {
            let mut buf = [0u8; 15];
            let mut n = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    buf[n] = b'.';
                    n += 1;
                }
                n += push_decimal(&mut buf[n..], octet);
            }
            HeaderValue::from_bytes(&buf[..n]).expect("digits and dots")
        }
        (None, ip) => HeaderValue::from_str(&ip.to_string()).expect("an address"),
        (Some(prev), ip) => {
            let mut joined = Vec::with_capacity(prev.len() + 41);
            joined.extend_from_slice(prev.as_bytes());
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(ip.to_string().as_bytes());
            // The earlier value was a valid header value; so is it with an address after it.
            HeaderValue::from_bytes(&joined).expect("a header value and an address")
        }
    }
}

/// Whether a request may be sent again after a failure that may have reached its upstream:
/// reads, and requests carrying an `Idempotency-Key` (the upstream answers a repeat with the
/// first outcome). PUT and DELETE are idempotent by the letter of HTTP, but a replay elsewhere
/// (a write that reached the service, sent again to the monolith) lands the write twice.
fn replayable(req: &RequestHeader) -> bool {
    matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS")
        || req.headers.contains_key("idempotency-key")
}

/// Writes a JSON error in the monolith's format and ends the request. Boxed: its state (the
/// response writes) would otherwise be part of `request_filter`'s future, allocated and copied on
/// every request, rejected or not.
fn reject<'a>(
    session: &'a mut Session,
    ctx: &'a mut Ctx,
    status: u16,
    code: &'a str,
    message: &'a str,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<bool>> + Send + 'a>> {
    Box::pin(reject_now(session, ctx, status, code, message))
}

async fn reject_now(
    session: &mut Session,
    ctx: &mut Ctx,
    status: u16,
    code: &str,
    message: &str,
) -> Result<bool> {
    let body =
        Bytes::from(serde_json::json!({"error": {"code": code, "message": message}}).to_string());
    let mut resp = ResponseHeader::build(status, Some(4))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    if let Some(ids) = &ctx.ids {
        resp.insert_header("x-request-id", ids.request_id.clone())?;
    }
    ctx.status = status;
    session.set_keepalive(None);
    session.write_response_header(Box::new(resp), false).await?;
    session.write_response_body(Some(body), true).await?;
    Ok(true)
}

#[async_trait]
impl ProxyHttp for StranglerProxy {
    type CTX = Ctx;

    fn new_ctx(&self) -> Ctx {
        Ctx::default()
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut Ctx) -> Result<bool> {
        ctx.started = Some(Instant::now());
        ctx.mode = 0;
        let table = self.control.table.load_full();
        let req = session.req_header();
        // One pass over the headers: their size, and the ids, kept as they came when each came
        // exactly once (and valid), or made here.
        let (mut header_bytes, mut id, mut tp) = (0, (0u32, None), (0u32, None));
        for (name, value) in &req.headers {
            header_bytes += name.as_str().len() + value.len() + 4;
            if *name == X_REQUEST_ID {
                id = (id.0 + 1, Some(value));
            } else if *name == TRACEPARENT {
                tp = (tp.0 + 1, Some(value));
            }
        }
        header_bytes += req.uri.path_and_query().map_or(1, |p| p.as_str().len());
        ctx.ids = Some(crate::trace::ids(
            id.1.filter(|_| id.0 == 1),
            tp.1.filter(|_| tp.0 == 1),
        ));
        let limits = &table.config.limits;
        if header_bytes > limits.max_header_bytes {
            self.control
                .metrics
                .rejected
                .with_label_values(&["headers_too_large"])
                .inc();
            ctx.table = Some(table);
            return reject(
                session,
                ctx,
                431,
                "request_header_fields_too_large",
                "the request headers are larger than allowed",
            )
            .await;
        }
        let declared: Option<usize> = req
            .headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        if declared.is_some_and(|n| n > limits.max_body_bytes) {
            self.control
                .metrics
                .rejected
                .with_label_values(&["body_too_large"])
                .inc();
            ctx.table = Some(table);
            return reject(
                session,
                ctx,
                413,
                "payload_too_large",
                "the request body is larger than allowed",
            )
            .await;
        }
        let read_only = matches!(
            req.method,
            pingora::http::Method::GET | pingora::http::Method::HEAD
        );
        let host = req
            .headers
            .get(HOST)
            .and_then(|h| h.to_str().ok())
            .map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name));
        let Some((index, route)) = table.find(req.method.as_str(), host, req.uri.path()) else {
            if table.config.unknown_routes == crate::config::UnknownRoutes::NotFound {
                ctx.table = Some(table);
                return reject(session, ctx, 404, "not_found", "route not found").await;
            }
            ctx.table = Some(table);
            return Ok(false);
        };
        ctx.route = Some(index);
        if !read_only {
            // During an ownership switch the flag's writes wait here, before the routing
            // decision, so that once released they go to the new owner.
            let (inflight, waited) = self.control.holds.enter_write(&route.flag).await;
            if waited {
                self.control
                    .metrics
                    .writes_held
                    .with_label_values(&[route.flag.as_str()])
                    .inc();
            }
            ctx.write = Some(inflight);
        }
        let user = table
            .user_keys
            .extract(session.req_header(), &self.control.jwks);
        if let UserKey::Anonymous { id, fresh: true } = &user {
            ctx.set_cookie = Some(format!(
                "{}={id}; Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax",
                table.user_keys.anonymous_cookie()
            ));
        }
        let flags = self.control.flags.snapshot();
        let (decision, writes_on_service) =
            match (self.control.launchdarkly.get(), flags.get(&route.flag)) {
                (Some(ld), flag) => {
                    ctx.mode = mode_index(flag.and_then(|f| RouteMode::of(f)));
                    side(&self.control.launchdarkly_decision(
                        ld,
                        &route.flag,
                        flag.map(|f| f.version),
                        user.key(),
                    ))
                }
                (None, Some(flag)) => {
                    ctx.mode = mode_index(RouteMode::of(flag));
                    side(
                        evaluate(flag, &Context::new(user.key()))
                            .value
                            .and_then(|v| v.as_str())
                            .unwrap_or("monolith"),
                    )
                }
                // An unknown flag is the safe default: the monolith.
                (None, None) => ("monolith", false),
            };
        // A decommissioned domain has no monolith to fall back to.
        let decision = if self.control.retired.contains(&route.flag) {
            ctx.retired = true;
            "retired"
        } else {
            decision
        };
        match decision {
            "retired" => {
                ctx.to_service = true;
                session.enable_retry_buffering();
            }
            // A canary routes reads only: the monolith owns the domain's writes until the
            // whole domain moves, or a write canary gives its users' writes to the service.
            "service" if ctx.mode == CANARY && !read_only && !writes_on_service => {}
            // A write canary splits writes by user: only a key that stays the user's for life
            // (the JWT's user id, or a trusted gateway's header) may own writes on the service;
            // session and anonymous keys change at login, so their writes stay on the monolith.
            "service"
                if ctx.mode == CANARY
                    && !read_only
                    && !matches!(user, UserKey::Jwt(_) | UserKey::Header(_)) => {}
            "service" => {
                let unavailable = if !route.service.any_healthy() {
                    Some("unhealthy")
                } else if !route.breaker.allow() {
                    Some("circuit_open")
                } else {
                    None
                };
                if let (Some(why), false) = (unavailable, read_only) {
                    // The service owns this user's writes: the monolith must not take them.
                    self.control
                        .metrics
                        .rejected
                        .with_label_values(&["owned_write_unavailable"])
                        .inc();
                    return Error::e_explain(
                        ErrorType::HTTPStatus(503),
                        format!(
                            "the service owns this write and is unavailable ({why}); not sent to the monolith"
                        ),
                    );
                }
                if let Some(why) = unavailable {
                    ctx.fallback = Some(why);
                } else {
                    ctx.owned_write = !read_only;
                    ctx.to_service = true;
                    // Keep the body so an idempotent request can be replayed on the monolith.
                    session.enable_retry_buffering();
                }
            }
            "shadow" if read_only || route.shadow_writes => {
                ctx.shadow = Some(Box::default());
            }
            _ => {}
        }
        ctx.table = Some(table);
        Ok(false)
    }

    async fn request_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<()> {
        if let Some(chunk) = body {
            ctx.body_bytes += chunk.len();
            let table = ctx.table.as_ref().expect("set in request_filter");
            if ctx.body_bytes > table.config.limits.max_body_bytes {
                self.control
                    .metrics
                    .rejected
                    .with_label_values(&["body_too_large"])
                    .inc();
                return Error::e_explain(ErrorType::HTTPStatus(413), "request body too large");
            }
            let max = table.config.shadow.max_body_bytes;
            if let Some(s) = ctx.shadow.as_mut() {
                if s.request_body.len() + chunk.len() <= max {
                    s.request_body.extend_from_slice(chunk);
                } else {
                    s.truncated = true;
                }
            }
        }
        Ok(())
    }

    async fn upstream_peer(&self, _session: &mut Session, ctx: &mut Ctx) -> Result<Box<HttpPeer>> {
        ctx.on_service = ctx.to_service && ctx.fallback.is_none();
        let table = ctx.table.as_ref().expect("set in request_filter");
        let group = match ctx.route(table) {
            Some(r) if ctx.on_service => &r.service,
            Some(r) => &r.monolith,
            None => &table.monolith,
        };
        Ok(group.peer(group.select()))
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        peer: &HttpPeer,
        ctx: &mut Ctx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        if ctx.on_service && (ctx.retired || ctx.owned_write) {
            // No monolith to go to (retired, or it does not own this write): the client hears
            // that the service is unreachable.
            if let Some(r) = ctx.route(&ctx.table.clone().expect("set in request_filter")) {
                r.breaker.record(false);
            }
            e.set_retry(false);
        } else if ctx.on_service {
            // Nothing reached the service: sending the request to the monolith is no replay.
            let table = ctx.table.clone().expect("set in request_filter");
            if let Some(r) = ctx.route(&table) {
                r.breaker.record(false);
            }
            tracing::warn!(peer = %peer, error = %e, "service refused the connection; falling back to the monolith");
            ctx.fallback = Some("connect_failed");
            e.set_retry(true);
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut Ctx,
        client_reused: bool,
    ) -> Box<Error> {
        let mut e = e.more_context(format!("Peer: {peer}"));
        let replayable = replayable(session.req_header());
        let truncated = session.as_ref().retry_buffer_truncated();
        if ctx.on_service {
            let may_fall_back = !(ctx.retired || ctx.owned_write);
            if client_reused
                && matches!(e.retry, pingora::RetryType::ReusedOnly)
                && !ctx.response_started
                && !truncated
                && replayable
                // A second stale connection in a row: the service has most likely just died
                // with several connections pooled. Attempts are few (three in all), so a read
                // that may go to the monolith goes there now rather than fail on the last one.
                && (ctx.stale_retries == 0 || !may_fall_back)
            {
                // Most likely a pooled connection the service had already closed, not the
                // service's fault: a request that may be replayed tries a fresh one.
                ctx.stale_retries += 1;
                e.retry.decide_reuse(true);
                return e;
            }
            let table = ctx.table.clone().expect("set in request_filter");
            if let Some(r) = ctx.route(&table) {
                r.breaker.record(false);
            }
            if !may_fall_back {
                // No monolith side, or one that does not own the write: the failure is the answer.
                ctx.not_retried = !replayable;
                e.set_retry(false);
            } else if replayable && !truncated && !ctx.response_started {
                tracing::warn!(peer = %peer, error = %e, "service failed a replayable request; retrying on the monolith");
                ctx.fallback = Some("service_error");
                e.set_retry(true);
            } else {
                // A write may have been applied: never replayed.
                ctx.not_retried = !replayable;
                e.set_retry(false);
            }
        } else if !replayable || truncated {
            ctx.not_retried = !replayable;
            e.set_retry(false);
        } else {
            e.retry.decide_reuse(client_reused);
        }
        e
    }

    /// The answer when proxying failed: the status pingora would give (504 for timeouts), with
    /// a JSON error in the monolith's format saying whether the request was retried.
    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut Ctx,
    ) -> pingora::proxy::FailToProxy {
        use pingora::ErrorSource;
        let code = match e.etype() {
            ErrorType::HTTPStatus(code) => *code,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout
                if *e.esource() == ErrorSource::Upstream =>
            {
                504
            }
            _ => match e.esource() {
                ErrorSource::Upstream => 502,
                ErrorSource::Downstream => match e.etype() {
                    ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed => 0,
                    _ => 400,
                },
                ErrorSource::Internal | ErrorSource::Unset => 500,
            },
        };
        if code > 0 && !ctx.response_started {
            let method = session.req_header().method.as_str().to_string();
            let (error, message) = match (code, ctx.not_retried) {
                (502 | 504, true) => (
                    "upstream_failed",
                    format!(
                        "the upstream failed while handling this {method} and it was not retried: it may have been applied (send an Idempotency-Key header to allow a retry)"
                    ),
                ),
                (504, false) => (
                    "upstream_timeout",
                    "the upstream did not answer in time".to_string(),
                ),
                (502, false) => (
                    "upstream_failed",
                    "the upstream failed to answer".to_string(),
                ),
                (503, _) => (
                    "unavailable",
                    e.context
                        .as_ref()
                        .map_or("the upstream is unavailable".to_string(), |c| {
                            c.as_str().to_string()
                        }),
                ),
                _ => (
                    "proxy_error",
                    "the proxy could not handle this request".to_string(),
                ),
            };
            if let Err(err) = reject_now(session, ctx, code, error, &message).await {
                tracing::debug!(error = %err, "could not send the error answer");
            }
        }
        pingora::proxy::FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        // Runs again for a retry on the monolith: every attempt carries the same ids.
        let (id, tp) = match &ctx.ids {
            Some(ids) => (
                (!ids.kept.0).then(|| Edit::Insert(&X_REQUEST_ID, ids.request_id.clone())),
                (!ids.kept.1).then(|| Edit::Insert(&TRACEPARENT, ids.traceparent.clone())),
            ),
            None => (None, None),
        };
        let forwarded = session.client_addr().and_then(|a| a.as_inet()).map(|addr| {
            let prev = upstream.headers.get(&X_FORWARDED_FOR);
            Edit::Insert(&X_FORWARDED_FOR, forwarded_for(prev, addr.ip()))
        });
        let preserve = ctx
            .table
            .as_ref()
            .is_some_and(|t| t.config.preserve_header_case);
        header_edit::apply(upstream, [id, tp, forwarded], preserve)
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.response_started = true;
        if ctx.on_service {
            let table = ctx.table.as_ref().expect("set in request_filter");
            if let Some(r) = ctx.route(table) {
                r.breaker.record(upstream.status.as_u16() < 500);
            }
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut Ctx,
    ) -> Result<()> {
        ctx.status = resp.status.as_u16();
        let id = ctx
            .ids
            .as_ref()
            .map(|ids| Edit::Insert(&X_REQUEST_ID, ids.request_id.clone()));
        let cookie = match ctx.set_cookie.take() {
            Some(c) => Some(Edit::Append(
                &SET_COOKIE,
                HeaderValue::try_from(c).map_err(|e| {
                    Error::because(ErrorType::InvalidHTTPHeader, "anonymous id cookie", e)
                })?,
            )),
            None => None,
        };
        let table = ctx.table.as_ref().expect("set in request_filter");
        let backend = table.config.debug_header.then(|| {
            let value = match (ctx.on_service, ctx.fallback) {
                (true, _) => HeaderValue::from_static("service"),
                (false, Some(reason)) => {
                    HeaderValue::from_str(&format!("monolith; fallback={reason}"))
                        .expect("a static reason")
                }
                (false, None) => HeaderValue::from_static("monolith"),
            };
            Edit::Insert(&X_STRANGLER_BACKEND, value)
        });
        header_edit::apply(
            resp,
            [id, cookie, backend],
            table.config.preserve_header_case,
        )?;
        if let Some(s) = ctx.shadow.as_mut() {
            s.status = resp.status.as_u16();
            s.headers = resp
                .headers
                .iter()
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
                .collect();
        }
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<Bytes>,
        _end_of_stream: bool,
        ctx: &mut Ctx,
    ) -> Result<Option<std::time::Duration>> {
        if let (Some(s), Some(chunk)) = (ctx.shadow.as_mut(), body.as_ref()) {
            let max = ctx
                .table
                .as_ref()
                .map_or(0, |t| t.config.shadow.max_body_bytes);
            if s.body.len() + chunk.len() <= max {
                s.body.extend_from_slice(chunk);
            } else {
                s.truncated = true;
            }
        }
        Ok(None)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut Ctx) {
        let shadow = ctx.shadow.take();
        let Some(table) = ctx.table.as_ref() else {
            return;
        };
        let route = ctx.route(table);
        let route_name = route.map_or("unmatched", |r| r.name.as_str());
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(ctx.status);
        let class = match status {
            100..=199 => 0,
            200..=299 => 1,
            300..=399 => 2,
            400..=499 => 3,
            500..=599 => 4,
            _ => 5,
        };
        let backend = usize::from(ctx.on_service);
        let m = &self.control.metrics;
        let end = Instant::now();
        let elapsed = ctx
            .started
            .map(|s| end.saturating_duration_since(s).as_secs_f64());
        let series = route.map_or(&table.unmatched, |r| &r.series);
        series
            .requests(m, route_name, backend, ctx.mode, class)
            .inc();
        if let Some(secs) = elapsed {
            series
                .latency(m, route_name, backend, ctx.mode)
                .observe(secs);
        }
        if let (Some(r), Some(secs)) = (route, elapsed) {
            // A request meant for the service that fell back counts against the service.
            let meant_for_service = ctx.to_service || ctx.fallback.is_some();
            let failed = e.is_some() || status >= 500 || status == 0;
            let window = if meant_for_service {
                &r.stats.service
            } else {
                &r.stats.monolith
            };
            window.record(
                crate::live::sec_at(end),
                secs * 1000.0,
                failed || (meant_for_service && ctx.fallback.is_some()),
            );
        }
        if let Some(reason) = ctx.fallback {
            m.fallbacks.with_label_values(&[route_name, reason]).inc();
        }
        if let Some(r) = route {
            r.series
                .circuit(m, route_name)
                .set(r.breaker.state() as i64);
        }
        if let Some(err) = e {
            tracing::warn!(route = route_name, request_id = ctx.ids.as_ref().and_then(|i| i.request_id.to_str().ok()).unwrap_or(""), error = %err, "request failed");
        }
        // Shadow: only for a complete answer the user got from the monolith.
        if let (Some(capture), Some(r), None) = (shadow, route, e) {
            if capture.truncated || capture.status == 0 {
                m.shadow.with_label_values(&[route_name, "skipped"]).inc();
                return;
            }
            let req = session.req_header();
            let method = req.method.as_str().to_string();
            let service: SocketAddr = r.service.select().addr;
            let monolith =
                matches!(method.as_str(), "GET" | "HEAD").then(|| r.monolith.select().addr);
            let job = ShadowJob {
                route: r.name.clone(),
                path_and_query: req
                    .uri
                    .path_and_query()
                    .map_or_else(|| "/".to_string(), |p| p.as_str().to_string()),
                method,
                headers: req
                    .headers
                    .iter()
                    .map(|(k, v)| (k.as_str().to_string(), v.as_bytes().to_vec()))
                    .collect(),
                body: capture.request_body.freeze(),
                service,
                monolith,
                primary_status: capture.status,
                primary_headers: capture.headers,
                primary_body: capture.body.freeze(),
                ignore: r.shadow_ignore.clone(),
                noise: r.noise.clone(),
            };
            if self.shadow_tx.try_send(job).is_err() {
                m.shadow.with_label_values(&[route_name, "dropped"]).inc();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_appends_the_client_address() {
        for n in [0u8, 7, 10, 99, 100, 127, 255] {
            let mut buf = [0u8; 3];
            let len = push_decimal(&mut buf, n);
            assert_eq!(&buf[..len], n.to_string().as_bytes());
        }
        let v4: std::net::IpAddr = "203.0.113.255".parse().unwrap();
        let v6: std::net::IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(forwarded_for(None, v4), "203.0.113.255");
        assert_eq!(forwarded_for(None, "0.0.0.0".parse().unwrap()), "0.0.0.0");
        assert_eq!(forwarded_for(None, v6), "2001:db8::1");
        let prev = HeaderValue::from_static("198.51.100.7");
        assert_eq!(
            forwarded_for(Some(&prev), v4),
            "198.51.100.7, 203.0.113.255"
        );
        assert_eq!(forwarded_for(Some(&prev), v6), "198.51.100.7, 2001:db8::1");
    }
}
