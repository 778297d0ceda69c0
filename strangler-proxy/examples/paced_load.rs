//! An open-loop load generator for the fixed-rate benchmark: requests are due evenly spaced (one
//! every 1/rate s; or Poisson arrivals), timed by spinning on the clock instead of sleeping on a
//! 1 ms timer tick (which releases them in bursts); each goes out on a free keep-alive connection,
//! and its latency counts from when it was due, waits for a connection included (coordinated
//! omission corrected), unless the generator itself was off the CPU then. Prints "p50_ms p99_ms
//! success_rate answered p999_ms max_ms generator_late"; `paced_load --help` for the options.

use std::collections::VecDeque;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Paced open-loop HTTP/1.1 load with latency from each request's due time")]
struct Args {
    /// http://host:port/path
    url: String,
    /// Requests per second.
    #[arg(long, short = 'q', default_value_t = 5000.0)]
    rate: f64,
    /// Seconds of load.
    #[arg(long, short = 'z', default_value_t = 10.0)]
    seconds: f64,
    /// Keep-alive connections (requests wait for a free one, and their wait counts).
    #[arg(long, short = 'c', default_value_t = 50)]
    conns: usize,
    /// Extra request header, "name: value" (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// When requests are due: `even` (one every 1/rate s, as wrk2 paces) or `poisson`
    /// (independent arrivals at the same mean rate, as from many unrelated users).
    #[arg(long, value_enum, default_value_t = Arrivals::Even)]
    arrivals: Arrivals,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Arrivals {
    Even,
    Poisson,
}

/// Offsets from the start, in seconds, at which the `n` requests are due.
fn schedule(arrivals: Arrivals, rate: f64, n: u64, seed: u64) -> Vec<f64> {
    match arrivals {
        Arrivals::Even => (0..n).map(|i| i as f64 / rate).collect(),
        Arrivals::Poisson => {
            // xorshift64*: enough for exponential gaps, and repeatable for a given seed.
            let mut x = seed | 1;
            let mut t = 0.0;
            (0..n)
                .map(|_| {
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    let u = ((x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 + 0.5)
                        / (1u64 << 53) as f64;
                    let due = t;
                    t += -u.ln() / rate;
                    due
                })
                .collect()
        }
    }
}

/// Where a response stands in a connection's buffer.
#[derive(Debug, PartialEq)]
enum Response {
    Incomplete,
    /// The status, the length of the whole response (head and body), and whether the server
    /// closes the connection after it (`Connection: close`).
    Complete {
        status: u16,
        len: usize,
        close: bool,
    },
    Malformed(&'static str),
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses one HTTP/1.1 response at the start of `buf`: Content-Length or chunked bodies.
fn parse_response(buf: &[u8]) -> Response {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 {
            Response::Malformed("response head over 64 KiB")
        } else {
            Response::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Response::Malformed("response head is not UTF-8");
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let Some(status) = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse::<u16>().ok())
    else {
        return Response::Malformed("bad status line");
    };
    let mut content_length = None;
    let mut chunked = false;
    let mut close = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Response::Malformed("header line without a colon");
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse::<usize>() {
                Ok(n) => content_length = Some(n),
                Err(_) => return Response::Malformed("bad content-length"),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let body = head_end + 4;
    if chunked {
        let mut at = body;
        loop {
            let Some(eol) = find(&buf[at..], b"\r\n") else {
                return Response::Incomplete;
            };
            let size_text = std::str::from_utf8(&buf[at..at + eol]).unwrap_or("");
            let size_text = size_text.split(';').next().unwrap_or("").trim();
            let Ok(size) = usize::from_str_radix(size_text, 16) else {
                return Response::Malformed("bad chunk size");
            };
            at += eol + 2;
            if size == 0 {
                // No trailers expected: the last chunk ends with an empty line.
                return if buf.len() >= at + 2 {
                    Response::Complete {
                        status,
                        len: at + 2,
                        close,
                    }
                } else {
                    Response::Incomplete
                };
            }
            if buf.len() < at + size + 2 {
                return Response::Incomplete;
            }
            at += size + 2;
        }
    }
    match content_length {
        Some(n) if buf.len() >= body + n => Response::Complete {
            status,
            len: body + n,
            close,
        },
        Some(_) => Response::Incomplete,
        None if status == 204 || status == 304 => Response::Complete {
            status,
            len: body,
            close,
        },
        None => Response::Malformed("response without content-length or chunked body"),
    }
}

/// A request the generator notices this long after it was due was missed by the generator.
const GENERATOR_LATE: Duration = Duration::from_micros(50);

struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// When the request in flight on it was due.
    due: Option<Instant>,
}

fn open(addr: SocketAddr) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Writes a small request on a non-blocking socket (loopback takes it at once; spins otherwise).
fn send(stream: &mut TcpStream, mut req: &[u8]) -> std::io::Result<()> {
    while !req.is_empty() {
        match stream.write(req) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => req = &req[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => std::hint::spin_loop(),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1e6
}

/// What a run measured.
struct Report {
    /// Latencies of the answered requests (any status), in ns, sorted.
    latencies: Vec<u64>,
    /// Requests answered 2xx.
    ok: u64,
    /// Requests answered otherwise, lost with their connection, or never answered.
    failed: u64,
    /// Requests the generator noticed late (it was off its CPU).
    late: u64,
}

impl Report {
    /// "p50_ms p99_ms success_rate answered_2xx p999_ms max_ms generator_late".
    fn line(&self) -> String {
        let sent = self.ok + self.failed;
        format!(
            "{:.3} {:.3} {:.4} {} {:.3} {:.3} {}",
            percentile(&self.latencies, 0.50),
            percentile(&self.latencies, 0.99),
            if sent == 0 {
                0.0
            } else {
                self.ok as f64 / sent as f64
            },
            self.ok,
            percentile(&self.latencies, 0.999),
            percentile(&self.latencies, 1.0),
            self.late
        )
    }
}

fn main() {
    let args = Args::parse();
    match run(&args) {
        Ok(report) => println!("{}", report.line()),
        Err(e) => {
            eprintln!("paced_load: {e}");
            std::process::exit(2);
        }
    }
}

fn run(args: &Args) -> Result<Report, String> {
    let rest = args
        .url
        .strip_prefix("http://")
        .ok_or("the URL must start with http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .to_socket_addrs()
        .map_err(|e| format!("{authority}: {e}"))?
        .next()
        .ok_or(format!("{authority}: no address"))?;
    if !(args.rate > 0.0 && args.seconds > 0.0 && args.conns > 0) {
        return Err("rate, seconds and conns must be positive".into());
    }
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\n");
    for h in &args.headers {
        if !h.contains(':') {
            return Err(format!("header {h:?} is not \"name: value\""));
        }
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    let request = request.into_bytes();

    let mut conns = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let stream = open(addr).map_err(|e| format!("connect {addr}: {e}"))?;
        conns.push(Conn {
            stream,
            buf: Vec::with_capacity(1024),
            due: None,
        });
    }
    let mut idle: Vec<usize> = (0..conns.len()).collect();
    let mut busy: Vec<usize> = Vec::with_capacity(conns.len());
    let mut waiting: VecDeque<Instant> = VecDeque::new();
    let total = (args.rate * args.seconds).round() as u64;
    let due_at = schedule(args.arrivals, args.rate, total, 0x5eed);
    let start = Instant::now() + Duration::from_millis(20);
    let drain_deadline = start + Duration::from_secs_f64(args.seconds + 5.0);
    let mut latencies: Vec<u64> = Vec::with_capacity(total as usize);
    let (mut ok, mut failed, mut late) = (0u64, 0u64, 0u64);
    let mut next = 0u64;
    let mut chunk = [0u8; 4096];

    loop {
        let now = Instant::now();
        while next < total {
            let due = start + Duration::from_secs_f64(due_at[next as usize]);
            if due > now {
                break;
            }
            // Seen late, the generator itself was off the CPU: its own stall is not the server's
            // latency, so the clock starts when it saw the request. Waiting for a free
            // connection, by contrast, counts.
            if now.duration_since(due) > GENERATOR_LATE {
                late += 1;
                waiting.push_back(now);
            } else {
                waiting.push_back(due);
            }
            next += 1;
        }
        while let (Some(&due), Some(c)) = (waiting.front(), idle.last().copied()) {
            waiting.pop_front();
            idle.pop();
            let conn = &mut conns[c];
            match send(&mut conn.stream, &request) {
                Ok(()) => {
                    conn.due = Some(due);
                    busy.push(c);
                }
                Err(e) => {
                    eprintln!("paced_load: send: {e}; reconnecting");
                    failed += 1;
                    conn.stream = open(addr).map_err(|e| format!("reconnect {addr}: {e}"))?;
                    conn.buf.clear();
                    idle.push(c);
                }
            }
        }
        let mut k = 0;
        while k < busy.len() {
            let c = busy[k];
            let conn = &mut conns[c];
            let outcome = match conn.stream.read(&mut chunk) {
                Ok(0) => Some(Err("connection closed by the server".to_string())),
                Ok(n) => {
                    conn.buf.extend_from_slice(&chunk[..n]);
                    match parse_response(&conn.buf) {
                        Response::Incomplete => None,
                        Response::Complete { status, len, close } if len == conn.buf.len() => {
                            Some(Ok((status, close)))
                        }
                        Response::Complete { .. } => {
                            Some(Err("bytes after the response".to_string()))
                        }
                        Response::Malformed(why) => Some(Err(why.to_string())),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => None,
                Err(e) => Some(Err(e.to_string())),
            };
            match outcome {
                None => k += 1,
                Some(result) => {
                    let due = conn.due.take().expect("a busy connection has a request");
                    if result.is_ok() {
                        latencies.push(Instant::now().duration_since(due).as_nanos() as u64);
                    }
                    conn.buf.clear();
                    let reopen = match result {
                        Ok((status, close)) if (200..300).contains(&status) => {
                            ok += 1;
                            close
                        }
                        Ok((status, close)) => {
                            failed += 1;
                            eprintln!("paced_load: status {status}");
                            close
                        }
                        Err(why) => {
                            failed += 1;
                            eprintln!("paced_load: {why}; reconnecting");
                            true
                        }
                    };
                    if reopen {
                        conn.stream = open(addr).map_err(|e| format!("reconnect {addr}: {e}"))?;
                    }
                    busy.swap_remove(k);
                    idle.push(c);
                }
            }
        }
        if next == total && waiting.is_empty() && busy.is_empty() {
            break;
        }
        if now > drain_deadline {
            eprintln!(
                "paced_load: {} requests still waiting or in flight 5 s after the end: counted as failed",
                waiting.len() + busy.len()
            );
            failed += (waiting.len() + busy.len()) as u64 + (total - next);
            break;
        }
        std::hint::spin_loop();
    }
    latencies.sort_unstable();
    Ok(Report {
        latencies,
        ok,
        failed,
        late,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length_responses_complete_only_with_their_whole_body() {
        let r = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(
            parse_response(r),
            Response::Complete {
                status: 200,
                len: r.len(),
                close: false
            }
        );
        assert_eq!(parse_response(&r[..r.len() - 1]), Response::Incomplete);
        assert_eq!(parse_response(&r[..10]), Response::Incomplete);
    }

    #[test]
    fn chunked_responses_end_at_the_last_chunk() {
        let r = b"HTTP/1.1 503 x\r\ntransfer-encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        assert_eq!(
            parse_response(r),
            Response::Complete {
                status: 503,
                len: r.len(),
                close: true
            }
        );
        assert_eq!(parse_response(&r[..r.len() - 2]), Response::Incomplete);
    }

    #[test]
    fn both_schedules_keep_the_mean_rate() {
        for arrivals in [Arrivals::Even, Arrivals::Poisson] {
            let due = schedule(arrivals, 5000.0, 50_000, 7);
            assert!(due.windows(2).all(|w| w[0] <= w[1]));
            let span = due[due.len() - 1];
            assert!(
                (span - 10.0).abs() < 0.2,
                "50,000 requests at 5,000/s span {span} s"
            );
        }
        // Poisson gaps vary (coefficient of variation 1); even ones do not.
        let due = schedule(Arrivals::Poisson, 5000.0, 50_000, 7);
        let gaps: Vec<f64> = due.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let sd = (gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64).sqrt();
        assert!(
            (sd / mean - 1.0).abs() < 0.05,
            "coefficient of variation {}",
            sd / mean
        );
    }

    /// A server that answers 2 bytes, a 503 every 50th response and closes the connection after
    /// every 7th (`Connection: close`), as nginx does after its keep-alive limit.
    fn flaky_server() -> SocketAddr {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let served = Arc::new(AtomicU64::new(0));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let served = served.clone();
                std::thread::spawn(move || {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    loop {
                        while find(&buf, b"\r\n\r\n").is_none() {
                            match stream.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let end = find(&buf, b"\r\n\r\n").unwrap() + 4;
                        buf.drain(..end);
                        let n = served.fetch_add(1, Ordering::Relaxed) + 1;
                        let status = if n.is_multiple_of(50) {
                            "503 Busy"
                        } else {
                            "200 OK"
                        };
                        let close = n.is_multiple_of(7);
                        let head = format!(
                            "HTTP/1.1 {status}\r\nContent-Length: 2\r\n{}\r\nok",
                            if close { "Connection: close\r\n" } else { "" }
                        );
                        if stream.write_all(head.as_bytes()).is_err() || close {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[test]
    fn a_run_counts_every_request_once_across_reconnects_and_errors() {
        let addr = flaky_server();
        let args = Args {
            url: format!("http://{addr}/bench"),
            rate: 2000.0,
            seconds: 0.25,
            conns: 4,
            headers: vec!["x-user-id: u1".into()],
            arrivals: Arrivals::Poisson,
        };
        let report = run(&args).unwrap();
        assert_eq!(report.ok + report.failed, 500);
        assert_eq!(report.failed, 10, "every 50th answer is a 503");
        assert_eq!(report.latencies.len(), 500, "every request answered once");
        assert!(report.latencies.windows(2).all(|w| w[0] <= w[1]));
        let line = report.line();
        assert_eq!(line.split(' ').count(), 7, "{line}");
        assert!(line.contains(" 0.9800 490 "), "{line}");
    }

    #[test]
    fn bad_arguments_are_refused_with_a_reason() {
        let args = |url: &str, headers: Vec<String>| Args {
            url: url.into(),
            rate: 10.0,
            seconds: 0.1,
            conns: 1,
            headers,
            arrivals: Arrivals::Even,
        };
        assert_eq!(
            run(&args("https://127.0.0.1:1/", vec![])).err().unwrap(),
            "the URL must start with http://"
        );
        assert!(
            run(&args("http://127.0.0.1:1/", vec!["no-colon".into()]))
                .err()
                .unwrap()
                .contains("is not \"name: value\"")
        );
    }

    #[test]
    fn garbage_is_malformed() {
        assert_eq!(
            parse_response(b"SSH-2.0-x\r\n\r\n"),
            Response::Malformed("bad status line")
        );
        assert_eq!(
            parse_response(b"HTTP/1.1 200 OK\r\n\r\n"),
            Response::Malformed("response without content-length or chunked body")
        );
    }
}
