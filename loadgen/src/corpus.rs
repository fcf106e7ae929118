//! The Docker-shaped test corpus: generating it, writing it as JSON lines, reading it back.
//!
//! Regenerate `testdata/docker-corpus.jsonl` (deterministic: same bytes every time) with
//!
//! ```text
//! cargo run --release --bin loadgen -- corpus --out testdata/docker-corpus.jsonl
//! ```
//!
//! Each record is what Docker's `fluentd` log driver puts in a Message-mode request's record:
//! `container_id` (64 hex), `container_name` (`/name`), `source` (`stdout`|`stderr`) and `log`
//! (one line of the container's output, without its newline). About 90% of the lines are JSON
//! application logs in the shapes common libraries write (zap, pino, logback/logstash, ECS,
//! structlog, Datadog, nginx/Envoy JSON access logs); 70% of those carry a 32-hex trace ID and a
//! 16-hex span ID under one of the usual names (`trace_id`/`span_id`, `traceId`/`spanId`,
//! `trace.id`/`span.id`, `dd.trace_id`/`dd.span_id`, `traceparent`, `logging.googleapis.com/trace`).
//! The rest are plain text lines (Spring Boot console, nginx combined, Python and Java). Line
//! lengths are 200–300 bytes, about 270 on average, so a Message-mode frame is about 430 bytes.
//!
//! This file is also compiled into the root package's benches (by `#[path]`), so it depends
//! on nothing but std.

use std::fmt::Write as _;

/// One record as Docker's fluentd driver sends it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub container_id: String,
    pub container_name: String,
    pub source: String,
    pub log: String,
}

/// Records in the committed corpus (fuzz seeds, benchmarks' small inputs).
pub const DEFAULT_RECORDS: usize = 4000;

/// Where the committed corpus lives, under the repository's root. Paths here are relative:
/// loadgen and the benches that compile this file are different packages, with different
/// `CARGO_MANIFEST_DIR`s, so each joins them to the root it knows.
pub const DEFAULT_PATH: &str = "testdata/docker-corpus.jsonl";

/// Records a load run replays by default: enough that a million events are a million
/// different lines (a small corpus sent again and again keeps the hot path in cache and
/// flatters it).
pub const RUN_RECORDS: usize = 1_000_000;

/// Where generated corpora are kept between runs, under the repository's root (not
/// committed: 450 MB for a million).
pub const CACHE_DIR: &str = "target/loadgen";

/// The `n`-record corpus from [`CACHE_DIR`] under `root`, generated and written there the
/// first time; the same bytes on every machine, since [`generate`] is deterministic.
pub fn cached(
    root: &std::path::Path,
    n: usize,
) -> Result<(std::path::PathBuf, Vec<Record>), String> {
    let dir = root.join(CACHE_DIR);
    let path = dir.join(format!("docker-corpus-{n}.jsonl"));
    if path.exists() {
        return load(&path).map(|r| (path, r));
    }
    let records = generate(n);
    let tmp = dir.join(format!("docker-corpus-{n}.jsonl.part"));
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, to_jsonl(&records)))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((path, records))
}

/// SplitMix64: tiny, fast, and its output is fixed forever (unlike a library RNG's).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// True with probability `pct`/100.
    pub fn percent(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    pub fn hex(&mut self, digits: usize) -> String {
        let mut s = String::with_capacity(digits);
        while s.len() < digits {
            let _ = write!(s, "{:016x}", self.next_u64());
        }
        s.truncate(digits);
        s
    }
}

/// How a service writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// Go, uber-go/zap production encoder; `trace_id`/`span_id`.
    Zap,
    /// Node.js pino; `traceId`/`spanId` (OpenTelemetry instrumentation-pino uses trace_id, but
    /// hand-rolled mixins often use camel case).
    Pino,
    /// Java Spring Boot 3 with logstash-logback-encoder; Micrometer's `traceId`/`spanId`.
    Logback,
    /// Elastic Common Schema (ecs-logging); `trace.id`/`span.id`.
    Ecs,
    /// Python structlog with OpenTelemetry; `trace_id`/`span_id`.
    Structlog,
    /// Datadog's log injection with 128-bit IDs logged as hex; `dd.trace_id`/`dd.span_id`.
    Datadog,
    /// nginx `log_format ... escape=json` access log carrying the `traceparent` header.
    NginxJson,
    /// Google Cloud structured logging; `logging.googleapis.com/trace` and `spanId`.
    Gcp,
}

struct Container {
    id: String,
    name: String,
    service: &'static str,
    style: Style,
    /// Percentage of this container's lines that are plain text.
    text_pct: u64,
}

const SERVICES: &[(&str, Style, u64)] = &[
    ("checkout-api", Style::Zap, 5),
    ("payments", Style::Logback, 15),
    ("cart", Style::Pino, 5),
    ("search", Style::Ecs, 8),
    ("recommendations", Style::Structlog, 15),
    ("orders", Style::Datadog, 10),
    ("ingress-nginx", Style::NginxJson, 12),
    ("inventory", Style::Gcp, 8),
    ("auth", Style::Zap, 10),
    ("notifications", Style::Pino, 10),
    ("billing", Style::Logback, 15),
    ("catalog", Style::Ecs, 8),
];

const METHODS: &[&str] = &[
    "GET", "GET", "GET", "GET", "POST", "POST", "PUT", "DELETE", "PATCH",
];
const PATHS: &[&str] = &[
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/api/v1/cart/{id}/items",
    "/api/v2/products/{id}",
    "/api/v2/products",
    "/api/v1/users/{id}/sessions",
    "/healthz",
    "/api/v1/payments/{id}/capture",
    "/api/v1/search",
    "/api/v1/inventory/{id}/reserve",
    "/graphql",
    "/api/v1/checkout",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "kube-probe/1.28",
    "python-requests/2.31.0",
    "curl/8.4.0",
];
const MESSAGES: &[&str] = &[
    "request completed",
    "handled request",
    "order created",
    "payment authorized",
    "cache miss, loading from database",
    "retrying upstream call",
    "user session refreshed",
    "inventory reserved",
    "published event to topic orders.v1",
    "slow query detected",
    "upstream returned non-2xx status",
    "token validation failed: signature expired",
    "rate limit exceeded for client",
    "connection pool exhausted, waiting for a free connection",
];
const LOGGERS: &[&str] = &[
    "com.example.orders.OrderService",
    "com.example.payments.web.PaymentController",
    "org.springframework.web.servlet.DispatcherServlet",
    "com.zaxxer.hikari.pool.HikariPool",
    "com.example.billing.InvoiceScheduler",
];
const CALLERS: &[&str] = &[
    "server/handler.go:142",
    "server/middleware.go:88",
    "store/postgres.go:231",
    "auth/jwt.go:57",
    "queue/publisher.go:119",
];

/// Severity for this line: mostly info, some debug, warnings and errors.
fn level(rng: &mut Rng) -> (&'static str, u64) {
    match rng.below(100) {
        0..=9 => ("debug", 20),
        10..=79 => ("info", 30),
        80..=93 => ("warn", 40),
        _ => ("error", 50),
    }
}

fn status(rng: &mut Rng, lvl: &str) -> u64 {
    match lvl {
        "error" => *rng.pick(&[500, 502, 503, 504]),
        "warn" => *rng.pick(&[400, 401, 403, 404, 409, 429]),
        _ => *rng.pick(&[200, 200, 200, 200, 201, 204, 304]),
    }
}

fn path(rng: &mut Rng) -> String {
    rng.pick(PATHS)
        .replace("{id}", &rng.range(1000, 99_999_999).to_string())
}

fn ip(rng: &mut Rng) -> String {
    format!(
        "10.{}.{}.{}",
        rng.below(64),
        rng.below(256),
        rng.range(1, 254)
    )
}

/// Seconds and microseconds of the `i`th line: a steady ~40 lines per second.
fn clock(i: usize) -> (u64, u32) {
    let micros = 1_700_000_000_000_000u64 + i as u64 * 25_013;
    (micros / 1_000_000, (micros % 1_000_000) as u32)
}

/// `2023-11-14T22:13:20.123456Z` for Unix seconds `secs` (days-from-civil, inverted).
fn rfc3339(secs: u64, micros: u32, digits: usize) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let frac = format!("{micros:06}");
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        &frac[..digits]
    )
}

/// A JSON value of a log field: a string, or a number/boolean written as it is.
#[derive(Clone)]
enum V {
    S(String),
    N(String),
}

fn s(v: impl Into<String>) -> V {
    V::S(v.into())
}

fn n(v: impl std::fmt::Display) -> V {
    V::N(v.to_string())
}

type Fields = Vec<(&'static str, V)>;

fn field_len(k: &str, v: &V) -> usize {
    // "k": plus the value plus a comma.
    k.len()
        + 4
        + match v {
            V::S(s) => s.len() + 2 + s.matches(['"', '\\']).count(),
            V::N(n) => n.len(),
        }
}

fn push_field(out: &mut String, k: &str, v: &V) {
    if out.len() > 1 {
        out.push(',');
    }
    out.push('"');
    out.push_str(k);
    out.push_str("\":");
    match v {
        V::S(s) => {
            out.push('"');
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    c => out.push(c),
                }
            }
            out.push('"');
        }
        V::N(n) => out.push_str(n),
    }
}

/// Writes every `core` field, then those `optional` fields (in order) that keep the line
/// within `target` bytes.
fn object(core: &Fields, optional: &Fields, target: usize) -> String {
    let mut out = String::from("{");
    for (k, v) in core {
        push_field(&mut out, k, v);
    }
    for (k, v) in optional {
        if out.len() + field_len(k, v) < target {
            push_field(&mut out, k, v);
        }
    }
    out.push('}');
    out
}

/// Fields a line may carry beyond its core, shuffled so lines of one service do not all end
/// the same way.
fn extras(rng: &mut Rng, c: &Container, i: usize) -> Fields {
    let mut v: Fields = vec![
        ("request_id", s(rng.hex(24))),
        ("remote_addr", s(ip(rng))),
        ("user_agent", s(*rng.pick(AGENTS))),
        ("bytes_out", n(rng.range(0, 48_000))),
        ("user_id", s(format!("u_{}", rng.range(10_000, 999_999)))),
        (
            "region",
            s(*rng.pick(&["eu-west-1", "us-east-1", "ap-south-1"])),
        ),
        ("version", s(format!("1.{}.{}", c.service.len() % 7, i % 3))),
        ("host", s(format!("{}-{}", c.service, &c.id[..10]))),
        ("retry", n(rng.below(3))),
        ("db_rows", n(rng.range(0, 500))),
    ];
    for k in (1..v.len()).rev() {
        let j = rng.below(k as u64 + 1) as usize;
        v.swap(k, j);
    }
    v
}

fn json_line(rng: &mut Rng, c: &Container, i: usize, target: usize) -> String {
    let (lvl, lvl_num) = level(rng);
    let (secs, micros) = clock(i);
    let msg = *rng.pick(MESSAGES);
    let method = *rng.pick(METHODS);
    let path = path(rng);
    let status = status(rng, lvl);
    let duration_ms = rng.range(1, 2500) as f64 / 10.0;
    let traced = rng.percent(70);
    let (trace, span) = (rng.hex(32), rng.hex(16));
    let mut opt = extras(rng, c, i);
    let ids = |t: &'static str, sp: &'static str| -> Fields {
        if traced {
            vec![(t, s(&trace)), (sp, s(&span))]
        } else {
            Vec::new()
        }
    };
    let (core, style_opt): (Fields, Fields) = match c.style {
        Style::Zap => (
            [
                vec![
                    ("level", s(lvl)),
                    ("ts", n(format!("{secs}.{micros:06}"))),
                    ("caller", s(*rng.pick(CALLERS))),
                    ("msg", s(msg)),
                ],
                ids("trace_id", "span_id"),
            ]
            .concat(),
            vec![
                ("method", s(method)),
                ("path", s(&path)),
                ("status", n(status)),
                ("duration_ms", n(duration_ms)),
            ],
        ),
        Style::Pino => (
            [
                vec![
                    ("level", n(lvl_num)),
                    ("time", n(secs * 1000 + u64::from(micros / 1000))),
                    ("pid", n(1)),
                    ("hostname", s(format!("{}-{}", c.service, &c.id[..5]))),
                ],
                ids("traceId", "spanId"),
                vec![("msg", s(msg))],
            ]
            .concat(),
            vec![
                ("reqId", s(format!("req-{}", rng.hex(4)))),
                ("method", s(method)),
                ("url", s(&path)),
                ("statusCode", n(status)),
                ("responseTime", n(duration_ms as u64)),
            ],
        ),
        Style::Logback => (
            [
                vec![
                    ("@timestamp", s(rfc3339(secs, micros, 3))),
                    (
                        "message",
                        s(if msg.len() + path.len() < 64 {
                            format!("{msg} [{method} {path}]")
                        } else {
                            msg.to_string()
                        }),
                    ),
                    ("logger_name", s(*rng.pick(LOGGERS))),
                    ("level", s(lvl.to_uppercase())),
                ],
                ids("traceId", "spanId"),
            ]
            .concat(),
            vec![
                (
                    "thread_name",
                    s(format!("http-nio-8080-exec-{}", rng.range(1, 200))),
                ),
                ("level_value", n(lvl_num * 1000 - 10_000)),
                ("@version", s("1")),
            ],
        ),
        Style::Ecs => (
            [
                vec![
                    ("@timestamp", s(rfc3339(secs, micros, 3))),
                    ("log.level", s(lvl)),
                    ("message", s(msg)),
                    ("service.name", s(c.service)),
                ],
                ids("trace.id", "span.id"),
            ]
            .concat(),
            vec![
                ("ecs.version", s("1.6.0")),
                ("http.request.method", s(method)),
                ("url.path", s(&path)),
                ("http.response.status_code", n(status)),
            ],
        ),
        Style::Structlog => (
            [
                vec![
                    ("event", s(msg)),
                    ("level", s(lvl)),
                    ("logger", s("app.api.views")),
                    ("timestamp", s(rfc3339(secs, micros, 6))),
                ],
                ids("trace_id", "span_id"),
            ]
            .concat(),
            vec![
                ("method", s(method)),
                ("path", s(&path)),
                ("status_code", n(status)),
                ("trace_sampled", n(traced)),
            ],
        ),
        Style::Datadog => (
            [
                vec![
                    ("timestamp", s(rfc3339(secs, micros, 3))),
                    ("status", s(lvl)),
                    ("message", s(msg)),
                ],
                ids("dd.trace_id", "dd.span_id"),
            ]
            .concat(),
            vec![
                ("dd.service", s(c.service)),
                ("dd.env", s("prod")),
                ("http.method", s(method)),
                ("http.url_details.path", s(&path)),
                ("http.status_code", n(status)),
            ],
        ),
        Style::NginxJson => {
            // nginx writes every field of its format, empty or not; nothing else.
            opt.clear();
            (
                vec![
                    ("time", s(rfc3339(secs, micros, 3))),
                    ("remote_addr", s(ip(rng))),
                    ("request", s(format!("{method} {path} HTTP/1.1"))),
                    ("status", s(status.to_string())),
                    ("body_bytes_sent", s(rng.range(0, 90_000).to_string())),
                    ("request_time", s(format!("{:.3}", duration_ms / 1000.0))),
                    (
                        "traceparent",
                        s(if traced {
                            format!("00-{trace}-{span}-01")
                        } else {
                            String::new()
                        }),
                    ),
                ],
                vec![
                    ("http_user_agent", s(*rng.pick(AGENTS))),
                    ("http_referer", s("")),
                    ("upstream_addr", s(format!("{}:8080", ip(rng)))),
                ],
            )
        }
        Style::Gcp => (
            [
                vec![
                    ("severity", s(lvl.to_uppercase())),
                    ("message", s(msg)),
                    ("time", s(rfc3339(secs, micros, 6))),
                ],
                if traced {
                    vec![
                        (
                            "logging.googleapis.com/trace",
                            s(format!("projects/shop-prod/traces/{trace}")),
                        ),
                        ("logging.googleapis.com/spanId", s(&span)),
                    ]
                } else {
                    Vec::new()
                },
            ]
            .concat(),
            vec![
                ("httpRequest.requestMethod", s(method)),
                ("httpRequest.requestUrl", s(&path)),
                ("httpRequest.status", n(status)),
            ],
        ),
    };
    let optional = [style_opt, opt].concat();
    object(&core, &optional, target)
}

fn text_line(rng: &mut Rng, c: &Container, i: usize, target: usize) -> String {
    let (lvl, _) = level(rng);
    let (secs, micros) = clock(i);
    let ts = rfc3339(secs, micros, 3);
    let mut line = match c.style {
        Style::Logback => format!(
            "{} {:>5} 1 --- [http-nio-8080-exec-{}] {:<40} : {} (order={}, took {} ms)",
            ts.replace('T', " ").trim_end_matches('Z'),
            lvl.to_uppercase(),
            rng.range(1, 200),
            rng.pick(LOGGERS),
            rng.pick(MESSAGES),
            rng.range(1000, 99_999),
            rng.range(1, 900),
        ),
        Style::NginxJson => format!(
            "{} - - [14/Nov/2023:22:{:02}:{:02} +0000] \"{} {} HTTP/1.1\" {} {} \"-\" \"{}\" {} {:.3}",
            ip(rng),
            secs / 60 % 60,
            secs % 60,
            rng.pick(METHODS),
            path(rng),
            rng.pick(&[200, 200, 304, 404, 502]),
            rng.range(0, 90_000),
            rng.pick(AGENTS),
            rng.range(300, 2000),
            rng.range(1, 900) as f64 / 1000.0,
        ),
        Style::Structlog => format!(
            "{} [{}] app.worker: task {} failed after {} retries: ConnectionError('HTTPConnectionPool(host=\\'{}\\', port=8080): Read timed out. (read timeout=5)')",
            ts,
            lvl,
            rng.hex(8),
            rng.range(1, 5),
            c.service,
        ),
        _ => format!(
            "{} {} [{}] {}: {} method={} path={} status={} dur={}ms",
            ts,
            lvl.to_uppercase(),
            c.service,
            rng.pick(CALLERS),
            rng.pick(MESSAGES),
            rng.pick(METHODS),
            path(rng),
            rng.pick(&[200, 201, 404, 500]),
            rng.range(1, 900),
        ),
    };
    // Pad with the kind of tail text loggers append, then cut to the target.
    let tails = [
        format!(" request_id={}", rng.hex(24)),
        format!(" remote={}:{}", ip(rng), rng.range(1024, 65535)),
        format!(" ua=\"{}\"", rng.pick(AGENTS)),
        format!(" bytes={}", rng.range(0, 48_000)),
        format!(" user=u_{}", rng.range(10_000, 999_999)),
        format!(" host={}-{}", c.service, &c.id[..10]),
        format!(" attempt={}/3", rng.range(1, 3)),
    ];
    for t in &tails {
        if line.len() >= target {
            break;
        }
        line.push_str(t);
    }
    line.truncate(target);
    line
}

/// Whether `line` holds a 32-hex trace ID (a run of exactly 32 hex digits).
pub fn has_trace_id(line: &str) -> bool {
    line.split(|c: char| !c.is_ascii_hexdigit())
        .any(|run| run.len() == 32)
}

/// The corpus: `n` records, the same for the same `n` on every machine and every run.
pub fn generate(n: usize) -> Vec<Record> {
    let mut rng = Rng::new(0x0075_7472_6967_6765); // "outrigge"
    let containers: Vec<Container> = SERVICES
        .iter()
        .map(|&(service, style, text_pct)| Container {
            id: rng.hex(64),
            // Compose-style names: /<project>-<service>-<replica>.
            name: format!("/shop-{service}-{}", 1 + rng.below(3)),
            service,
            style,
            text_pct,
        })
        .collect();
    (0..n)
        .map(|i| {
            // A few busy containers write most of the lines, as on a real node.
            let c = &containers[match rng.below(100) {
                0..=24 => 0,
                25..=44 => 1,
                45..=59 => 2,
                k => 3 + (k as usize - 60) % (containers.len() - 3),
            }];
            // Targets between 220 and 300, weighted toward the top (mean about 273); JSON lines
            // end a little short of theirs, text lines are cut to it.
            let target = (300 - rng.below(81).min(rng.below(81))) as usize;
            let text = rng.percent(c.text_pct);
            let log = if text {
                text_line(&mut rng, c, i, target)
            } else {
                json_line(&mut rng, c, i, target)
            };
            // Errors go to stderr, as most loggers are set up to do.
            let stderr = ["\"error\"", "ERROR", "\"level\":50", "[error]", "Error("]
                .iter()
                .any(|e| log.contains(e));
            Record {
                container_id: c.id.clone(),
                container_name: c.name.clone(),
                source: if stderr { "stderr" } else { "stdout" }.into(),
                log,
            }
        })
        .collect()
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// The corpus as JSON lines, keys in the order the driver writes them.
pub fn to_jsonl(records: &[Record]) -> String {
    let mut out = String::new();
    for r in records {
        out.push_str("{\"container_id\":");
        push_json_str(&mut out, &r.container_id);
        out.push_str(",\"container_name\":");
        push_json_str(&mut out, &r.container_name);
        out.push_str(",\"source\":");
        push_json_str(&mut out, &r.source);
        out.push_str(",\"log\":");
        push_json_str(&mut out, &r.log);
        out.push_str("}\n");
    }
    out
}

/// Reads JSON lines of flat objects with string values (the corpus format). Unknown keys are
/// ignored; the four record keys are required.
pub fn parse_jsonl(text: &str) -> Result<Vec<Record>, String> {
    let mut records = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let fields = parse_object(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("line {}: no `{k}`", n + 1))
        };
        records.push(Record {
            container_id: get("container_id")?,
            container_name: get("container_name")?,
            source: get("source")?,
            log: get("log")?,
        });
    }
    Ok(records)
}

/// The string value of top-level `key` in a one-line JSON object whose other values may be of
/// any type (the `testdata/enrich` case files): found by looking for `"key"` followed by `:`.
/// Good enough for files we write ourselves; not a JSON parser.
pub fn string_field(line: &str, key: &str) -> Option<String> {
    let quoted = format!("\"{key}\"");
    let mut from = 0;
    while let Some(at) = line[from..].find(&quoted) {
        let mut p = Parser {
            s: line.as_bytes(),
            pos: from + at + quoted.len(),
        };
        if p.next() == Ok(b':') {
            return p.string().ok();
        }
        from += at + quoted.len();
    }
    None
}

fn parse_object(line: &str) -> Result<Vec<(String, String)>, String> {
    let mut p = Parser {
        s: line.as_bytes(),
        pos: 0,
    };
    let mut fields = Vec::new();
    p.expect(b'{')?;
    if p.peek() == Some(b'}') {
        return Ok(fields);
    }
    loop {
        let k = p.string()?;
        p.expect(b':')?;
        let v = p.string()?;
        fields.push((k, v));
        match p.next()? {
            b',' => continue,
            b'}' => break,
            c => return Err(format!("unexpected `{}` at {}", c as char, p.pos)),
        }
    }
    Ok(fields)
}

struct Parser<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn skip_ws(&mut self) {
        while matches!(self.s.get(self.pos), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.pos += 1;
        }
    }
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.pos).copied()
    }
    fn next(&mut self) -> Result<u8, String> {
        let c = self.peek().ok_or("unexpected end of line")?;
        self.pos += 1;
        Ok(c)
    }
    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.next()? {
            c if c == want => Ok(()),
            c => Err(format!(
                "expected `{}`, found `{}` at {}",
                want as char, c as char, self.pos
            )),
        }
    }
    fn hex4(&mut self) -> Result<u32, String> {
        let h = self
            .s
            .get(self.pos..self.pos + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or("bad \\u escape")?;
        self.pos += 4;
        Ok(h)
    }
    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.pos).ok_or("unterminated string")?;
            self.pos += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.pos).ok_or("unterminated escape")?;
                    self.pos += 1;
                    let ch = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let hi = self.hex4()?;
                            let cp = if (0xd800..0xdc00).contains(&hi)
                                && self.s.get(self.pos..self.pos + 2) == Some(b"\\u")
                            {
                                self.pos += 2;
                                let lo = self.hex4()?;
                                0x10000 + ((hi - 0xd800) << 10) + (lo.wrapping_sub(0xdc00) & 0x3ff)
                            } else {
                                hi
                            };
                            char::from_u32(cp).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at {}", self.pos)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }
}

/// The committed corpus at `path`, or (when that file is missing) the same records generated.
pub fn load(path: &std::path::Path) -> Result<Vec<Record>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_jsonl(&text).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(generate(DEFAULT_RECORDS)),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_jsonl() {
        let records = generate(300);
        assert_eq!(parse_jsonl(&to_jsonl(&records)).unwrap(), records);
    }

    #[test]
    fn corpus_has_the_promised_shape() {
        let records = generate(DEFAULT_RECORDS);
        let n = records.len() as f64;
        let mean = records.iter().map(|r| r.log.len()).sum::<usize>() as f64 / n;
        assert!((260.0..=280.0).contains(&mean), "mean log length {mean}");
        assert!(records.iter().all(|r| (200..=300).contains(&r.log.len())));
        let json: Vec<_> = records.iter().filter(|r| r.log.starts_with('{')).collect();
        let share = json.len() as f64 / n;
        assert!((0.87..=0.93).contains(&share), "JSON share {share}");
        let traced =
            json.iter().filter(|r| has_trace_id(&r.log)).count() as f64 / json.len() as f64;
        assert!((0.65..=0.75).contains(&traced), "traced share {traced}");
        assert!(records.iter().all(|r| r.container_id.len() == 64
            && r.container_name.starts_with('/')
            && (r.source == "stdout" || r.source == "stderr")));
    }

    #[test]
    fn string_field_reads_the_case_files() {
        let l = r#"{"name": "x", "flags": 1, "line": "{\"msg\":\"a\\\"b\"}", "span_id": null}"#;
        assert_eq!(
            string_field(l, "line").as_deref(),
            Some(r#"{"msg":"a\"b"}"#)
        );
        assert_eq!(string_field(l, "name").as_deref(), Some("x"));
        assert_eq!(string_field(l, "span_id"), None);
        assert_eq!(string_field(l, "nope"), None);
        // A key's name inside a value is not the key.
        let l = r#"{"a": "\"line\" here", "line": "yes"}"#;
        assert_eq!(string_field(l, "line").as_deref(), Some("yes"));
    }

    #[test]
    fn dates_are_right() {
        assert_eq!(
            rfc3339(1_700_000_000, 123_456, 3),
            "2023-11-14T22:13:20.123Z"
        );
        assert_eq!(rfc3339(951_782_400, 0, 6), "2000-02-29T00:00:00.000000Z");
    }
}
