//! Trace context from log values: normalizing the many ways applications write trace and span
//! IDs into the W3C form (16-byte trace ID, 8-byte span ID, one flags byte).
//!
//! What comes in: the bytes of one field value ([`trace_id`], [`span_id`], [`flags`],
//! [`context`]), a JSON scalar found under a configured key ([`Family::extract`], [`extract`]),
//! or a whole plain-text line ([`TextScanner::scan`]). What goes out: a [`TraceContext`], or
//! `None` when the input is not a usable ID.
//!
//! Invariants the enrichment stage relies on (it calls this per log line, about a million
//! times a second):
//!
//! - No input makes these functions panic, and no call allocates: IDs are decoded from the
//!   byte slice into fixed arrays. Only building a [`TextScanner`] and the family lists
//!   ([`default_families`], [`default_text_families`]) allocate, once, at start-up.
//! - No regex, no backtracking: each value is read left to right once; the text scanner runs
//!   one Aho-Corasick pass over the line and reads at most [`MAX_TEXT_VALUE`] bytes after
//!   each key it finds.
//! - A returned trace ID is never all zeros. A returned span ID is never all zeros: an
//!   all-zero span is dropped and the trace kept.
//! - Hex is accepted in either case (tools and hand-written logs use uppercase); the output
//!   is bytes, and [`TraceContext::trace_id_hex`] writes lowercase.
//! - IDs shorter than the target are left-padded with zeros, never right-padded (the W3C
//!   trace-id format's rule for systems with shorter identifiers; the OTel Collector's
//!   right-padding is the mistake not to copy).
//!
//! Precedence between sources in one JSON line is the order of the [`Family`] list
//! ([`default_families`]: explicit OTel-style fields, then `traceparent`, then vendor formats);
//! a trace ID from one family is never combined with a span ID from another. Plain text uses
//! its own list, [`default_text_families`], where `traceparent` comes first (see
//! [`TextScanner`]).
//!
//! Specifications: W3C Trace Context <https://www.w3.org/TR/trace-context/>; B3
//! <https://github.com/openzipkin/b3-propagation>; AWS X-Ray `X-Amzn-Trace-Id`
//! <https://docs.aws.amazon.com/xray/latest/devguide/xray-concepts.html#xray-concepts-tracingheader>;
//! Datadog IDs <https://docs.datadoghq.com/tracing/guide/span_and_trace_id_format/>; Google
//! Cloud <https://cloud.google.com/trace/docs/trace-log-integration>; Jaeger
//! <https://www.jaegertracing.io/docs/1.x/client-libraries/#propagation-format>.

use std::fmt;

use aho_corasick::{AhoCorasick, MatchKind};
use memchr::{memchr, memmem};

// === TraceContext ===

/// A normalized W3C trace context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TraceContext {
    /// The 16-byte trace ID; never all zeros when produced by this module.
    pub trace_id: [u8; 16],
    /// The 8-byte span (parent) ID, when the source had a valid, non-zero one.
    pub span_id: Option<[u8; 8]>,
    /// W3C trace flags when the source stated them: bit 0 ([`TraceContext::SAMPLED`]) is
    /// "sampled", bit 1 is "random trace ID" (Trace Context Level 2). Test bits with a mask.
    pub flags: Option<u8>,
}

impl TraceContext {
    /// The W3C `sampled` bit of [`TraceContext::flags`].
    pub const SAMPLED: u8 = 0x01;

    fn from_trace(trace_id: [u8; 16]) -> Self {
        TraceContext {
            trace_id,
            span_id: None,
            flags: None,
        }
    }

    /// The trace ID as 32 lowercase hex characters, the form Loki structured metadata and ECS
    /// `trace.id` want; returned by value so writing it costs no allocation.
    pub fn trace_id_hex(&self) -> [u8; 32] {
        let mut out = [0; 32];
        encode_lower(&self.trace_id, &mut out);
        out
    }

    /// The span ID as 16 lowercase hex characters, if there is one.
    pub fn span_id_hex(&self) -> Option<[u8; 16]> {
        self.span_id.map(|span| {
            let mut out = [0; 16];
            encode_lower(&span, &mut out);
            out
        })
    }

    /// Whether the source said the trace was sampled (bit 0 of the flags), if it said anything.
    pub fn sampled(&self) -> Option<bool> {
        self.flags.map(|f| f & Self::SAMPLED != 0)
    }
}

// === Format ===

/// How a field's value encodes an ID or a whole context.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// 32 hex characters, or 1 to 16 (64-bit IDs, and Jaeger's with leading zeros stripped)
    /// left-padded; any case. Not the dashed UUID form: an ID with dashes is not a W3C ID
    /// unless the application really used it as one, so that would be an opt-in format.
    Hex,
    /// Datadog: decimal unsigned 64-bit (lower 64 bits), or 32 hex when 128-bit logging is on.
    Datadog,
    /// A whole W3C `traceparent` value.
    Traceparent,
    /// A whole B3 single header: `{trace}-{span}[-{sampling}[-{parent}]]`.
    B3,
    /// AWS X-Ray: `Root=1-…;Parent=…;Sampled=1`, or a bare `1-xxxxxxxx-yyyy…` trace ID
    /// (optionally `@segment`, as the X-Ray Java SDK writes to the MDC).
    Xray,
    /// Google Cloud: `projects/P/traces/ID`, or a bare 32-hex ID.
    Gcp,
    /// Jaeger's legacy `uber-trace-id`: `{trace}:{span}:{parent}:{flags}`, hex with leading
    /// zeros possibly stripped. Added because Jaeger-instrumented services still copy this
    /// header into logs and nothing else in this list parses it.
    Jaeger,
}

impl Format {
    /// Whether one value of this format carries a whole context (trace ID, and usually span ID
    /// and flags) rather than a single ID. For these formats [`span_id`] returns the span
    /// inside the context, and a [`Family`]'s separate span keys are read as plain [`Hex`].
    ///
    /// [`Hex`]: Format::Hex
    pub fn is_whole_context(self) -> bool {
        matches!(
            self,
            Format::Traceparent | Format::B3 | Format::Xray | Format::Jaeger
        )
    }
}

// === Single values ===

/// The trace ID in `value`, normalized to 16 bytes; `None` when `value` is not a valid,
/// non-zero trace ID in `format`.
///
/// Why each rule (see the module docs for the sources):
///
/// - [`Format::Hex`]: exactly 32 hex, or 1–16 hex left-padded (B3/Brave 64-bit IDs, Jaeger
///   IDs with leading zeros stripped). 17–31 or more than 32 characters is ambiguous and
///   rejected, as is the dashed UUID form.
/// - [`Format::Datadog`]: exactly 32 characters are 128-bit hex (`DD_TRACE_128_BIT_TRACEID_
///   LOGGING_ENABLED`); anything else must be a decimal `u64`, or a negative `i64` that some
///   tracers emit, reinterpreted as two's complement. The result holds only the lower 64 bits,
///   which is what Datadog correlates on. A 32-digit all-decimal value is read as hex: Datadog
///   never zero-pads decimals, and a `u64` has at most 20 digits.
/// - [`Format::Xray`]: `1-{8 hex}-{24 hex}` concatenated (what the OTel X-Ray propagator
///   does); the `Root=` field of a header; an `@segment` suffix is ignored.
/// - [`Format::Gcp`]: the part after the last `/traces/`, or the whole value; exactly 32 hex
///   (Cloud Trace IDs are always 128-bit, so no padding).
/// - Whole-context formats: the trace part of [`context`].
pub fn trace_id(value: &[u8], format: Format) -> Option<[u8; 16]> {
    match format {
        Format::Hex => hex_trace(value),
        Format::Datadog => datadog_trace(value),
        Format::Gcp => gcp_trace(value),
        Format::Traceparent | Format::B3 | Format::Xray | Format::Jaeger => {
            context(value, format).map(|c| c.trace_id)
        }
    }
}

/// The span ID in `value`, normalized to 8 bytes; `None` when it is not a valid, non-zero span
/// ID in `format`.
///
/// - [`Format::Hex`]: 1–16 hex, left-padded. Shorter values are accepted for the same reason
///   as for trace IDs (Jaeger strips leading zeros); OTel Python's `"0"` for "no span" is all
///   zeros and so still `None`.
/// - [`Format::Datadog`]: decimal `u64` (or negative `i64`, as for trace IDs). A 16-character
///   value with a hex letter is read as hex; a 16-digit value is decimal, because Datadog logs
///   span IDs in decimal even with 128-bit trace logging on.
/// - [`Format::Gcp`]: 16 hex; an all-digit value of another length is a decimal `u64` (Cloud
///   Trace API v1 and older agents used decimal span IDs).
/// - [`Format::Xray`] and the other whole-context formats: the span inside [`context`] (for
///   X-Ray, `Parent=`, or the `@segment` of the Java SDK's MDC form).
pub fn span_id(value: &[u8], format: Format) -> Option<[u8; 8]> {
    match format {
        Format::Hex => nonzero(decode_right::<8>(value)?),
        Format::Datadog => datadog_span(value),
        Format::Gcp => gcp_span(value),
        Format::Traceparent | Format::B3 | Format::Xray | Format::Jaeger => {
            context(value, format)?.span_id
        }
    }
}

/// The trace flags in a separate flags or "sampled" field, as the W3C flags byte.
///
/// Mapping, chosen to cover what loggers write for such fields:
///
/// - one or two hex digits are the byte itself: `"01"`/`"1"` → `0x01`, `"00"`/`"0"` → `0x00`,
///   `"03"` → `0x03` (sampled + random). This is the W3C and OTel MDC form (`trace_flags:
///   "01"`), and B3's `X-B3-Sampled`/`X-B3-Flags` `0`/`1` agree with it.
/// - `true`/`false` in any case → `0x01`/`0x00`: GCP `trace_sampled`, and Python's `True`
///   from OTel's `otelTraceSampled`.
/// - anything else → `None`.
pub fn flags(value: &[u8]) -> Option<u8> {
    match value.len() {
        1 | 2 => decode_right::<1>(value).map(|b| b[0]),
        4 if value.eq_ignore_ascii_case(b"true") => Some(TraceContext::SAMPLED),
        5 if value.eq_ignore_ascii_case(b"false") => Some(0),
        _ => None,
    }
}

/// A whole context from one value; for [`Format::Hex`], [`Format::Datadog`] and
/// [`Format::Gcp`] just the trace ID (span and flags `None`).
///
/// - [`Format::Traceparent`] (W3C §"traceparent Header"): at least 55 characters,
///   `vv-{32}-{16}-{2}`. Version `ff` is invalid; version `00` must be exactly 55 characters;
///   higher versions may continue after a `-`, and the rest is ignored. Our leniency for logs:
///   uppercase hex is accepted (it identifies the trace unambiguously). All-zero trace ⇒
///   `None`; all-zero parent ⇒ span dropped, trace kept.
/// - [`Format::B3`]: `{trace}-{span}[-{sampling}[-{parent}]]`, trace 16 (left-padded) or 32
///   hex, span and parent 16 hex; sampling `1` or `d` (debug) ⇒ flags `0x01`, `0` ⇒ `0x00`,
///   absent ⇒ `None`. `b3: 0` alone (not sampled, no IDs) ⇒ `None`.
/// - [`Format::Xray`]: the header `Root=…;Parent=…;Sampled=…` (fields in any order, keys in
///   any case, unknown fields such as `Lineage` ignored; `Sampled=1` ⇒ `0x01`, `0` ⇒ `0x00`,
///   `?` ⇒ `None`; an invalid `Parent` drops the span only), or a bare root ID, whose
///   `@segment` suffix (X-Ray Java SDK MDC, `traceId@entityId`) is the current segment's ID,
///   i.e. the span ID.
/// - [`Format::Jaeger`]: exactly four `:`-separated fields; trace 1–32 hex and span 1–16 hex,
///   left-padded; flags hex, of which only bit 0 (sampled) is kept, because Jaeger's bit 1
///   means "debug", not W3C's "random".
pub fn context(value: &[u8], format: Format) -> Option<TraceContext> {
    match format {
        Format::Traceparent => traceparent(value),
        Format::B3 => b3(value),
        Format::Xray => xray(value),
        Format::Jaeger => jaeger(value),
        Format::Hex | Format::Datadog | Format::Gcp => {
            trace_id(value, format).map(TraceContext::from_trace)
        }
    }
}

fn hex_trace(value: &[u8]) -> Option<[u8; 16]> {
    match value.len() {
        32 => nonzero(decode_fixed(value)?),
        1..=16 => nonzero(decode_right(value)?),
        _ => None,
    }
}

fn datadog_trace(value: &[u8]) -> Option<[u8; 16]> {
    if value.len() == 32 {
        return nonzero(decode_fixed(value)?);
    }
    nonzero(widen(datadog_decimal(value)?))
}

fn datadog_span(value: &[u8]) -> Option<[u8; 8]> {
    if value.len() == 16 && !value.iter().all(u8::is_ascii_digit) {
        return nonzero(decode_fixed(value)?);
    }
    nonzero(datadog_decimal(value)?.to_be_bytes())
}

fn gcp_trace(value: &[u8]) -> Option<[u8; 16]> {
    let id = match memmem::rfind(value, b"/traces/") {
        Some(i) => &value[i + b"/traces/".len()..],
        None => value,
    };
    nonzero(decode_fixed(id)?)
}

fn gcp_span(value: &[u8]) -> Option<[u8; 8]> {
    if value.len() != 16 && value.iter().all(u8::is_ascii_digit) {
        return nonzero(parse_decimal(value)?.to_be_bytes());
    }
    nonzero(decode_fixed(value)?)
}

/// Length of a version-00 `traceparent`, and the minimum for any version.
const TRACEPARENT_LEN: usize = 55;

fn traceparent(value: &[u8]) -> Option<TraceContext> {
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = decode_fixed::<1>(&value[..2])?[0];
    if version == 0xff || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    if value.len() > TRACEPARENT_LEN && (version == 0 || value[TRACEPARENT_LEN] != b'-') {
        return None;
    }
    let trace_id = nonzero(decode_fixed(&value[3..35])?)?;
    let span = decode_fixed(&value[36..52])?;
    let flags = decode_fixed::<1>(&value[53..55])?[0];
    Some(TraceContext {
        trace_id,
        span_id: nonzero(span),
        flags: Some(flags),
    })
}

fn b3(value: &[u8]) -> Option<TraceContext> {
    let mut parts = value.split(|&b| b == b'-');
    let trace = parts.next()?;
    // A lone sampling state (`0`, `1`, `d`) carries no IDs.
    let span = parts.next()?;
    let trace_id = match trace.len() {
        16 | 32 => nonzero(decode_right(trace)?)?,
        _ => return None,
    };
    let span = decode_fixed(span)?;
    let flags = match parts.next() {
        None => None,
        Some(b"1" | b"d") => Some(TraceContext::SAMPLED),
        Some(b"0") => Some(0),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        decode_fixed::<8>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some(TraceContext {
        trace_id,
        span_id: nonzero(span),
        flags,
    })
}

fn xray(value: &[u8]) -> Option<TraceContext> {
    if memchr(b'=', value).is_none() {
        return xray_root(value);
    }
    let (mut root, mut parent, mut sampled) = (None, None, None);
    for field in value.split(|&b| b == b';') {
        let field = field.trim_ascii();
        let Some(eq) = memchr(b'=', field) else {
            continue;
        };
        let (key, val) = (&field[..eq], &field[eq + 1..]);
        if key.eq_ignore_ascii_case(b"Root") {
            root = root.or(Some(val));
        } else if key.eq_ignore_ascii_case(b"Parent") {
            parent = parent.or(Some(val));
        } else if key.eq_ignore_ascii_case(b"Sampled") {
            sampled = sampled.or(Some(val));
        }
    }
    let mut ctx = xray_root(root?)?;
    if let Some(parent) = parent {
        ctx.span_id = decode_fixed(parent).and_then(nonzero);
    }
    ctx.flags = match sampled {
        Some(b"1") => Some(TraceContext::SAMPLED),
        Some(b"0") => Some(0),
        _ => None,
    };
    Some(ctx)
}

/// `1-{8 hex epoch}-{24 hex random}[@{16 hex segment}]`.
fn xray_root(value: &[u8]) -> Option<TraceContext> {
    let (id, segment) = match memchr(b'@', value) {
        Some(at) => (&value[..at], Some(&value[at + 1..])),
        None => (value, None),
    };
    if id.len() != 35 || id[0] != b'1' || id[1] != b'-' || id[10] != b'-' {
        return None;
    }
    let epoch: [u8; 4] = decode_fixed(&id[2..10])?;
    let random: [u8; 12] = decode_fixed(&id[11..])?;
    let mut trace_id = [0; 16];
    trace_id[..4].copy_from_slice(&epoch);
    trace_id[4..].copy_from_slice(&random);
    Some(TraceContext {
        trace_id: nonzero(trace_id)?,
        span_id: segment.and_then(decode_fixed).and_then(nonzero),
        flags: None,
    })
}

fn jaeger(value: &[u8]) -> Option<TraceContext> {
    let mut parts = value.split(|&b| b == b':');
    let (trace, span, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let trace_id = nonzero(decode_right(trace)?)?;
    let span = decode_right(span)?;
    decode_right::<8>(parent)?;
    let flags = decode_right::<1>(flags)?[0];
    Some(TraceContext {
        trace_id,
        span_id: nonzero(span),
        flags: Some(flags & TraceContext::SAMPLED),
    })
}

// === Families: where IDs live in JSON logs ===

/// One way applications write a trace context into structured logs: the keys holding the
/// trace ID, span ID and flags, and how the values are encoded. Read from configuration as a
/// list, in priority order (`[[…families]]` tables in TOML).
///
/// A key is a dotted path that matches flat or nested: `"dd.trace_id"` matches a top-level key
/// `dd.trace_id` and `{"dd": {"trace_id": …}}`. At each object level the walker tries the
/// whole remaining path as one key first, then splits at each `.` from the left and descends
/// into an object under the prefix. Keys containing dots that are not nesting
/// (`logging.googleapis.com/trace`) therefore match as flat keys. Keys are case-sensitive.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    /// Names the source, for the debug attribute that records which family won.
    pub name: String,
    /// Keys holding the trace ID (or the whole context, for whole-context formats), tried in
    /// order; the first whose value is valid wins.
    pub trace: Vec<String>,
    /// Keys holding the span ID, tried in order; the first valid one is used. Empty for
    /// formats whose value carries the span.
    #[serde(default)]
    pub span: Vec<String>,
    /// Keys holding trace flags or a sampled boolean (see [`flags`]), tried in order.
    #[serde(default)]
    pub flags: Vec<String>,
    /// How the trace value (and span value, for single-ID formats) is encoded.
    pub format: Format,
}

impl Family {
    fn new(name: &str, trace: &[&str], span: &[&str], flags: &[&str], format: Format) -> Self {
        let owned = |keys: &[&str]| keys.iter().map(|k| (*k).to_owned()).collect();
        Family {
            name: name.to_owned(),
            trace: owned(trace),
            span: owned(span),
            flags: owned(flags),
            format,
        }
    }
}

/// A scalar JSON value found under a family's key, so numbers and booleans need not be
/// formatted into text (and allocated) before parsing.
///
/// Numbers are meaningful only where the format is numeric: Datadog IDs (`"dd.trace_id":
/// 1234`), GCP decimal span IDs, and flags (the number is the byte). A number under a hex key
/// is rejected rather than read as hex, since it was almost certainly written as decimal.
/// The walker passes floats as `None` (a float ID has lost precision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scalar<'a> {
    /// A string's contents, unescaped.
    Str(&'a [u8]),
    /// A non-negative integer.
    U64(u64),
    /// A signed integer (simd-json and serde_json use it for negative ones); non-negative
    /// values are accepted here too and mean the same as [`Scalar::U64`].
    I64(i64),
    /// `true` or `false`.
    Bool(bool),
}

/// [`context`] for a JSON scalar: strings as text, numbers only where the format is decimal.
pub fn scalar_context(value: Scalar<'_>, format: Format) -> Option<TraceContext> {
    let id = match (value, format) {
        (Scalar::Str(s), _) => return context(s, format),
        (Scalar::U64(n), Format::Datadog) => n,
        // Two's-complement reinterpretation, as for negative decimal strings.
        (Scalar::I64(n), Format::Datadog) => n as u64,
        _ => return None,
    };
    nonzero(widen(id)).map(TraceContext::from_trace)
}

/// [`span_id`] for a JSON scalar.
pub fn scalar_span(value: Scalar<'_>, format: Format) -> Option<[u8; 8]> {
    let format = if format.is_whole_context() {
        Format::Hex
    } else {
        format
    };
    let id = match (value, format) {
        (Scalar::Str(s), _) => return span_id(s, format),
        (Scalar::U64(n), Format::Datadog | Format::Gcp) => n,
        (Scalar::I64(n), Format::Datadog) => n as u64,
        (Scalar::I64(n), Format::Gcp) => u64::try_from(n).ok()?,
        _ => return None,
    };
    nonzero(id.to_be_bytes())
}

/// [`flags`] for a JSON scalar: numbers are the byte, booleans the sampled bit.
pub fn scalar_flags(value: Scalar<'_>) -> Option<u8> {
    match value {
        Scalar::Str(s) => flags(s),
        Scalar::U64(n) => u8::try_from(n).ok(),
        Scalar::I64(n) => u8::try_from(n).ok(),
        Scalar::Bool(b) => Some(u8::from(b)),
    }
}

/// The built-in families for JSON logs, in precedence order (reference §3 and §4):
///
/// 1. explicit OTel-style fields, one family per naming convention so that `trace_id` pairs
///    with `span_id` and never with `spanId`: `otel` (`trace_id`, OTel Java MDC, JS
///    instrumentations), `camel` (`traceId`, Micrometer/Sleuth), `camel_id` (`traceID`, zap
///    users), `pascal` (`TraceId`, .NET), `otel_python` (`otelTraceID`), `ecs` (`trace.id`;
///    span from `span.id`, else `transaction.id`), `serilog` (`@tr`);
/// 2. `traceparent` (three spellings);
/// 3. vendors: `datadog`, `xray`, `gcp`, `b3_multi` (`X-B3-*`, Sleuth 1.x), `b3` (single
///    header), `jaeger` (`uber-trace-id`).
pub fn default_families() -> Vec<Family> {
    use Format::*;
    vec![
        Family::new("otel", &["trace_id"], &["span_id"], &["trace_flags"], Hex),
        Family::new("camel", &["traceId"], &["spanId"], &["traceFlags"], Hex),
        Family::new("camel_id", &["traceID"], &["spanID"], &[], Hex),
        Family::new("pascal", &["TraceId"], &["SpanId"], &["TraceFlags"], Hex),
        Family::new(
            "otel_python",
            &["otelTraceID"],
            &["otelSpanID"],
            &["otelTraceSampled"],
            Hex,
        ),
        Family::new(
            "ecs",
            &["trace.id"],
            &["span.id", "transaction.id"],
            &[],
            Hex,
        ),
        Family::new("serilog", &["@tr"], &["@sp"], &[], Hex),
        Family::new(
            "traceparent",
            &["traceparent", "traceParent", "trace_parent"],
            &[],
            &[],
            Traceparent,
        ),
        Family::new("datadog", &["dd.trace_id"], &["dd.span_id"], &[], Datadog),
        Family::new(
            "xray",
            &[
                "xray_trace_id",
                "AWS-XRAY-TRACE-ID",
                "X-Amzn-Trace-Id",
                "_X_AMZN_TRACE_ID",
            ],
            &[],
            &[],
            Xray,
        ),
        Family::new(
            "gcp",
            &["logging.googleapis.com/trace"],
            &["logging.googleapis.com/spanId"],
            &["logging.googleapis.com/trace_sampled"],
            Gcp,
        ),
        Family::new(
            "b3_multi",
            &["X-B3-TraceId"],
            &["X-B3-SpanId"],
            &["X-B3-Sampled", "X-B3-Flags"],
            Hex,
        ),
        Family::new("b3", &["b3"], &[], &[], B3),
        Family::new("jaeger", &["uber-trace-id"], &[], &[], Jaeger),
    ]
}

/// The built-in families for plain-text lines, in priority order: `traceparent` (as
/// `traceparent=…` and as a bare `00-…` anywhere), then `trace_id`/`span_id`/`trace_flags`,
/// `traceId`/`spanId`, `traceID`/`spanID`, `trace.id`/`span.id`, then
/// `dd.trace_id`/`dd.span_id`.
///
/// `traceparent` comes first here but after the explicit fields in [`default_families`]:
/// in free text, a 55-character `vv-{32}-{16}-{2}` shape is far less likely to be an accident
/// than `key=<hex>`, and it carries span and flags together, whereas in JSON an explicit
/// `trace_id` field is the application's own statement.
pub fn default_text_families() -> Vec<Family> {
    use Format::*;
    vec![
        Family::new("traceparent", &["traceparent"], &[], &[], Traceparent),
        Family::new("otel", &["trace_id"], &["span_id"], &["trace_flags"], Hex),
        Family::new("camel", &["traceId"], &["spanId"], &[], Hex),
        Family::new("camel_id", &["traceID"], &["spanID"], &[], Hex),
        Family::new("ecs", &["trace.id"], &["span.id"], &[], Hex),
        Family::new("datadog", &["dd.trace_id"], &["dd.span_id"], &[], Datadog),
    ]
}

// === TextScanner ===

/// Most families a [`TextScanner`] takes: a scan keeps one slot per family in a fixed array on
/// the stack, so it never allocates. Sixteen is more naming conventions than one fleet uses.
pub const MAX_TEXT_FAMILIES: usize = 16;

/// Longest value read after a key in plain text. Bounds the work per key found, so a line
/// costs time linear in its length however many keys it holds; the longest real value, an
/// X-Ray header with `Self` and `Lineage`, is about 150 bytes.
pub const MAX_TEXT_VALUE: usize = 256;

/// Finds a trace context in a plain-text line: `key=value` tokens of configured families, and
/// bare W3C `traceparent` values. Built once; [`TextScanner::scan`] is one Aho-Corasick pass
/// over the line with no allocation.
///
/// Matching rules (each exists to keep false positives out of correlation):
///
/// - A key must start the line or follow a byte that cannot be part of an identifier (not
///   ASCII alphanumeric, `_`, `.` or `-`), so `xtrace_id=`, `my-trace_id=` and
///   `foo.trace_id=` do not match `trace_id`. `dd.trace_id` is its own key.
/// - After the key: an optional closing quote (`"`, `'` or `\"`, for JSON fragments in
///   text), optional spaces or tabs, then `=` or `:` (required), optional spaces, an optional
///   opening quote. The value is the maximal run of bytes the format allows (for hex formats:
///   ASCII alphanumerics, `-`, `_`); with an opening quote, the same quote must follow it. The
///   whole run must be valid, so `trace_id=4bf92f35-77b3-…` (a UUID) or a 33-character run is
///   rejected rather than truncated.
/// - Text is stricter than JSON for [`Format::Hex`]: a trace value must be exactly 32 or 16
///   hex (16 is left-padded), a span value exactly 16, because a short hex word after a
///   trace-ish key in prose is more often noise than a Jaeger ID.
/// - A bare traceparent is `00-{32}-{16}-{2}`, not preceded by an identifier byte and not
///   followed by an alphanumeric, `-` or `_`. It counts for the first [`Format::Traceparent`]
///   family; only version 00 is recognized bare.
///
/// Family rule: a trace ID and a span ID are combined only when both come from keys of the
/// same [`Family`] (`trace_id` with `span_id`, `dd.trace_id` with `dd.span_id`); if the
/// winning family has no valid span in the line, the span is `None`.
///
/// Priority: the first family in the list with a valid trace ID wins; within a family, the
/// first valid occurrence in the line. With [`default_text_families`]: traceparent >
/// OTel-style keys > Datadog. The result does not depend on anything but the line.
#[derive(Debug, Clone)]
pub struct TextScanner {
    /// Every key of every family, plus `00-` when a family takes bare traceparents, matched
    /// leftmost-longest without overlaps: five times faster than reporting overlapping
    /// matches (about 100 ns for a 270-byte line), and nothing is lost, because a key can
    /// only start after a non-identifier byte, and every default key consists of identifier
    /// bytes, so no valid key starts inside another match.
    keys: AhoCorasick,
    /// What each pattern of `keys` is, indexed by pattern ID.
    roles: Vec<KeyRole>,
    /// Each family's format and whether it has span or flags keys, in priority order.
    families: Vec<FamilyShape>,
}

#[derive(Debug, Clone, Copy)]
struct KeyRole {
    family: usize,
    part: Part,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    Trace,
    Span,
    Flags,
    BareTraceparent,
}

#[derive(Debug, Clone, Copy)]
struct FamilyShape {
    format: Format,
    has_span: bool,
    has_flags: bool,
}

/// What one scan found for one family so far.
#[derive(Clone, Copy)]
struct Found {
    trace: Option<TraceContext>,
    span: Option<[u8; 8]>,
    flags: Option<u8>,
}

impl Found {
    const NONE: Found = Found {
        trace: None,
        span: None,
        flags: None,
    };

    /// Nothing later in the line can change this family's result.
    fn is_complete(&self, shape: &FamilyShape) -> bool {
        self.trace.is_some_and(|t| {
            (!shape.has_span || t.span_id.is_some() || self.span.is_some())
                && (!shape.has_flags || t.flags.is_some() || self.flags.is_some())
        })
    }

    fn finish(self) -> Option<TraceContext> {
        let mut ctx = self.trace?;
        ctx.span_id = ctx.span_id.or(self.span);
        ctx.flags = ctx.flags.or(self.flags);
        Some(ctx)
    }
}

/// Why a [`TextScanner`] could not be built from configured families.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScannerError {
    /// More than [`MAX_TEXT_FAMILIES`] families.
    TooManyFamilies(usize),
    /// The named family has no trace key.
    NoTraceKey(String),
    /// The named family has an empty key.
    EmptyKey(String),
    /// A key appears twice (in one family or across families), so its role is ambiguous.
    DuplicateKey(String),
    /// The key automaton could not be built (the message is aho-corasick's).
    Build(String),
}

impl fmt::Display for ScannerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScannerError::TooManyFamilies(n) => write!(
                f,
                "{n} text trace families configured, at most {MAX_TEXT_FAMILIES} are supported"
            ),
            ScannerError::NoTraceKey(name) => write!(f, "trace family {name:?} has no trace key"),
            ScannerError::EmptyKey(name) => write!(f, "trace family {name:?} has an empty key"),
            ScannerError::DuplicateKey(key) => {
                write!(f, "trace key {key:?} is configured more than once")
            }
            ScannerError::Build(msg) => write!(f, "building the trace key matcher: {msg}"),
        }
    }
}

impl std::error::Error for ScannerError {}

impl Default for TextScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl TextScanner {
    /// A scanner for [`default_text_families`].
    pub fn new() -> Self {
        // The defaults are fixed and covered by tests, so this cannot fail at run time.
        Self::try_with_families(&default_text_families()).expect("default text families are valid")
    }

    /// A scanner for configured families, in priority order. Keys are matched verbatim and
    /// case-sensitively in the text (a dotted key like `dd.trace_id` is one token).
    ///
    /// # Errors
    ///
    /// [`ScannerError`] when there are more than [`MAX_TEXT_FAMILIES`] families, a family has
    /// no trace key or an empty key, or a key appears twice.
    pub fn try_with_families(families: &[Family]) -> Result<Self, ScannerError> {
        if families.len() > MAX_TEXT_FAMILIES {
            return Err(ScannerError::TooManyFamilies(families.len()));
        }
        let mut patterns: Vec<&str> = Vec::new();
        let mut roles = Vec::new();
        let mut shapes = Vec::with_capacity(families.len());
        for (index, family) in families.iter().enumerate() {
            if family.trace.is_empty() {
                return Err(ScannerError::NoTraceKey(family.name.clone()));
            }
            let parts = [
                (&family.trace, Part::Trace),
                (&family.span, Part::Span),
                (&family.flags, Part::Flags),
            ];
            for (keys, part) in parts {
                for key in keys {
                    if key.is_empty() {
                        return Err(ScannerError::EmptyKey(family.name.clone()));
                    }
                    if patterns.contains(&key.as_str()) {
                        return Err(ScannerError::DuplicateKey(key.clone()));
                    }
                    patterns.push(key);
                    roles.push(KeyRole {
                        family: index,
                        part,
                    });
                }
            }
            shapes.push(FamilyShape {
                format: family.format,
                has_span: !family.span.is_empty(),
                has_flags: !family.flags.is_empty(),
            });
        }
        if let Some(index) = families
            .iter()
            .position(|f| f.format == Format::Traceparent)
        {
            if patterns.contains(&"00-") {
                return Err(ScannerError::DuplicateKey("00-".to_owned()));
            }
            patterns.push("00-");
            roles.push(KeyRole {
                family: index,
                part: Part::BareTraceparent,
            });
        }
        let keys = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .build(&patterns)
            .map_err(|e| ScannerError::Build(e.to_string()))?;
        Ok(TextScanner {
            keys,
            roles,
            families: shapes,
        })
    }

    /// The trace context in `line`, by the rules on [`TextScanner`]; `None` when no family
    /// yields a valid trace ID.
    pub fn scan(&self, line: &[u8]) -> Option<TraceContext> {
        let mut found = [Found::NONE; MAX_TEXT_FAMILIES];
        for m in self.keys.find_iter(line) {
            let role = self.roles[m.pattern().as_usize()];
            let shape = self.families[role.family];
            let slot = &mut found[role.family];
            match role.part {
                Part::BareTraceparent => {
                    if slot.trace.is_none() {
                        slot.trace = bare_traceparent(line, m.start());
                    }
                }
                Part::Trace => {
                    if slot.trace.is_none() {
                        slot.trace = key_value(line, m.start(), m.end(), shape.format)
                            .and_then(|v| text_context(v, shape.format));
                    }
                }
                Part::Span => {
                    if slot.span.is_none() {
                        slot.span = key_value(line, m.start(), m.end(), shape.format)
                            .and_then(|v| text_span(v, shape.format));
                    }
                }
                Part::Flags => {
                    if slot.flags.is_none() {
                        slot.flags =
                            key_value(line, m.start(), m.end(), Format::Hex).and_then(flags);
                    }
                }
            }
            // The top family's first complete context cannot be beaten: stop reading.
            if role.family == 0 && found[0].is_complete(&self.families[0]) {
                break;
            }
        }
        found[..self.families.len()].iter().find_map(|f| f.finish())
    }
}

/// Bytes that may be part of a key or identifier; a key preceded by one is inside a longer
/// word.
fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

/// Which bytes a value in each format may contain in plain text, one bit per format group:
/// a table because the value loop runs over every byte of every value found.
const VALUE_BYTES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut bits = 0;
        if c.is_ascii_alphanumeric() {
            bits = HEXISH | JAEGER | XRAY | GCP;
        }
        if matches!(c, b'-' | b'_') {
            bits |= HEXISH;
        }
        if c == b':' {
            bits |= JAEGER;
        }
        if matches!(c, b'-' | b'=' | b';' | b'@') {
            bits |= XRAY;
        }
        if matches!(c, b'-' | b'_' | b'/' | b'.' | b':') {
            bits |= GCP;
        }
        table[b] = bits;
        b += 1;
    }
    table
};
const HEXISH: u8 = 1;
const JAEGER: u8 = 2;
const XRAY: u8 = 4;
const GCP: u8 = 8;

/// The [`VALUE_BYTES`] bit for `format`'s values: alphanumerics plus the separators the
/// format uses (`-` in traceparent and B3, `:` in Jaeger, `=;@` in X-Ray headers, a path for
/// GCP), and `-`/`_` for single IDs so that a UUID or `id_suffix` is one (invalid) run.
fn value_bytes(format: Format) -> u8 {
    match format {
        Format::Hex | Format::Datadog | Format::Traceparent | Format::B3 => HEXISH,
        Format::Jaeger => JAEGER,
        Format::Xray => XRAY,
        Format::Gcp => GCP,
    }
}

/// An optional quote at `i`: where the text after it starts, and the quote to expect again.
fn skip_quote(line: &[u8], i: usize) -> (usize, Option<&'static [u8]>) {
    match line.get(i..).unwrap_or_default() {
        [b'\\', b'"', ..] => (i + 2, Some(b"\\\"")),
        [b'"', ..] => (i + 1, Some(b"\"")),
        [b'\'', ..] => (i + 1, Some(b"'")),
        _ => (i, None),
    }
}

fn skip_blanks(line: &[u8], mut i: usize) -> usize {
    while matches!(line.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// The value after the key matched at `start..end`, or `None` when the key is inside a
/// longer word, has no separator, or the value is unterminated or longer than
/// [`MAX_TEXT_VALUE`].
fn key_value(line: &[u8], start: usize, end: usize, format: Format) -> Option<&[u8]> {
    if start > 0 && is_ident(line[start - 1]) {
        return None;
    }
    let (i, _) = skip_quote(line, end);
    let i = skip_blanks(line, i);
    if !matches!(line.get(i), Some(b'=' | b':')) {
        return None;
    }
    let i = skip_blanks(line, i + 1);
    let (from, quote) = skip_quote(line, i);
    let class = value_bytes(format);
    let window = &line[from..line.len().min(from + MAX_TEXT_VALUE + 1)];
    let len = window
        .iter()
        .position(|&b| VALUE_BYTES[usize::from(b)] & class == 0)
        .unwrap_or(window.len());
    if len > MAX_TEXT_VALUE {
        return None;
    }
    let to = from + len;
    if let Some(quote) = quote
        && !line[to..].starts_with(quote)
    {
        return None;
    }
    Some(&line[from..to])
}

fn bare_traceparent(line: &[u8], start: usize) -> Option<TraceContext> {
    if start > 0 && is_ident(line[start - 1]) {
        return None;
    }
    let end = start + TRACEPARENT_LEN;
    let candidate = line.get(start..end)?;
    if line
        .get(end)
        .is_some_and(|&b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
    {
        return None;
    }
    traceparent(candidate)
}

fn text_context(value: &[u8], format: Format) -> Option<TraceContext> {
    if format == Format::Hex && value.len() != 16 && value.len() != 32 {
        return None;
    }
    context(value, format)
}

fn text_span(value: &[u8], format: Format) -> Option<[u8; 8]> {
    let format = if format.is_whole_context() {
        Format::Hex
    } else {
        format
    };
    if format == Format::Hex && value.len() != 16 {
        return None;
    }
    span_id(value, format)
}

// === Hex and decimal ===

/// Hex digit values, `0xff` for anything else; a table instead of branches because this runs
/// for every character of every ID.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xff; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        table[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};

/// Exactly `2 * N` hex digits, any case.
fn decode_fixed<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.len() != 2 * N {
        return None;
    }
    let mut out = [0; N];
    let mut bad = 0;
    for (byte, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let (hi, lo) = (HEX_VALUE[pair[0] as usize], HEX_VALUE[pair[1] as usize]);
        bad |= hi | lo;
        *byte = hi << 4 | (lo & 0x0f);
    }
    // Valid digits are at most 0x0f; any 0xff marks a non-hex byte.
    (bad & 0xf0 == 0).then_some(out)
}

/// 1 to `2 * N` hex digits, any case, right-aligned (left-padded with zeros).
fn decode_right<const N: usize>(hex: &[u8]) -> Option<[u8; N]> {
    if hex.is_empty() || hex.len() > 2 * N {
        return None;
    }
    let mut out = [0; N];
    let mut bad = 0;
    for (k, &c) in hex.iter().rev().enumerate() {
        let v = HEX_VALUE[c as usize];
        bad |= v;
        let byte = &mut out[N - 1 - k / 2];
        *byte |= if k % 2 == 0 { v & 0x0f } else { v << 4 };
    }
    (bad & 0xf0 == 0).then_some(out)
}

fn encode_lower(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 0x0f)];
    }
}

fn nonzero<const N: usize>(id: [u8; N]) -> Option<[u8; N]> {
    (id != [0; N]).then_some(id)
}

/// A 64-bit ID as a 128-bit one: left-padded, so it is the low 64 bits.
fn widen(id: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[8..].copy_from_slice(&id.to_be_bytes());
    out
}

/// ASCII decimal digits into a `u64`; `None` on anything else or overflow.
fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &c| {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A Datadog decimal ID: a `u64`, or a negative `i64` reinterpreted as two's complement.
fn datadog_decimal(value: &[u8]) -> Option<u64> {
    match value.strip_prefix(b"-") {
        Some(magnitude) => {
            let m = parse_decimal(magnitude)?;
            (m <= 1 << 63).then(|| m.wrapping_neg())
        }
        None => parse_decimal(value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Shared fixtures: the W3C example context, the X-Ray example, and the reference's 64-bit
    // example.
    const T1: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
    const S1: &str = "00f067aa0ba902b7";
    const TP1: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const XRAY_ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";
    const XRAY_TRACE: &str = "5759e988bd862e3fe1be46a994272793";
    const XRAY_PARENT: &str = "53995c3f42cd8ad8";
    /// The low 64 bits of `T1` in decimal, as Datadog logs it.
    const T1_LOW_DEC: &str = "11803532876627986230";
    const T1_LOW_PADDED: &str = "0000000000000000a3ce929d0e0e4736";
    /// `S1` in decimal.
    const S1_DEC: &str = "67667974448284343";

    fn t(hex: &str) -> [u8; 16] {
        decode_fixed(hex.as_bytes()).expect("fixture trace id")
    }

    fn s(hex: &str) -> [u8; 8] {
        decode_fixed(hex.as_bytes()).expect("fixture span id")
    }

    fn ctx(trace: &str, span: Option<&str>, flags: Option<u8>) -> TraceContext {
        TraceContext {
            trace_id: t(trace),
            span_id: span.map(s),
            flags,
        }
    }

    fn trace_hex(value: &str, format: Format) -> Option<String> {
        trace_id(value.as_bytes(), format).map(|id| hex_string(&id))
    }

    fn span_hex(value: &str, format: Format) -> Option<String> {
        span_id(value.as_bytes(), format).map(|id| hex_string(&id))
    }

    fn hex_string(bytes: &[u8]) -> String {
        let mut out = vec![0; bytes.len() * 2];
        encode_lower(bytes, &mut out);
        String::from_utf8(out).unwrap()
    }

    fn ctx_of(value: &str, format: Format) -> Option<TraceContext> {
        context(value.as_bytes(), format)
    }

    // --- Hex ---

    #[test]
    fn hex_trace_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (T1, Some(T1)),
            ("4BF92F3577B34DA6A3CE929D0E0E4736", Some(T1)),
            ("4bf92F3577b34DA6a3ce929d0e0e4736", Some(T1)),
            // The reference's 64-bit example: left-padded, never right-padded.
            ("53ce929d0e0e4736", Some("000000000000000053ce929d0e0e4736")),
            ("53CE929D0E0E4736", Some("000000000000000053ce929d0e0e4736")),
            // Jaeger strips leading zeros, including to odd lengths.
            ("abc", Some("00000000000000000000000000000abc")),
            ("1", Some("00000000000000000000000000000001")),
            (
                "00000000000000000000000000000001",
                Some("00000000000000000000000000000001"),
            ),
            // All zeros in any length.
            ("00000000000000000000000000000000", None),
            ("0000000000000000", None),
            ("0", None),
            // Wrong lengths.
            ("", None),
            ("53ce929d0e0e47361", None),
            ("4bf92f3577b34da6a3ce929d0e0e473", None),
            ("4bf92f3577b34da6a3ce929d0e0e47360", None),
            // Not hex, or not only hex.
            ("4bf92f3577b34da6a3ce929d0e0e473g", None),
            ("4bf92f3577b34da6 3ce929d0e0e4736", None),
            ("0x4bf92f3577b34da6a3ce929d0e0e47", None),
            ("4bf92f35-77b3-4da6-a3ce-929d0e0e4736", None),
            (" 53ce929d0e0e4736", None),
            ("53ce929d0e0e4736\n", None),
            ("é", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                trace_hex(input, Format::Hex).as_deref(),
                *want,
                "trace_id({input:?}, Hex)"
            );
            // For single-ID formats the context is the trace alone.
            assert_eq!(
                ctx_of(input, Format::Hex),
                want.map(|w| ctx(w, None, None)),
                "context({input:?}, Hex)"
            );
        }
    }

    #[test]
    fn hex_span_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (S1, Some(S1)),
            ("00F067AA0BA902B7", Some(S1)),
            ("f067aa0ba902b7", Some(S1)),
            ("abc", Some("0000000000000abc")),
            // OTel Python writes "0" when there is no span.
            ("0", None),
            ("0000000000000000", None),
            ("", None),
            ("00f067aa0ba902b70", None),
            (T1, None),
            ("00f067aa0ba902bz", None),
            ("00f067aa-0ba902b7", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                span_hex(input, Format::Hex).as_deref(),
                *want,
                "span_id({input:?}, Hex)"
            );
        }
    }

    // --- Datadog ---

    #[test]
    fn datadog_trace_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (T1_LOW_DEC, Some(T1_LOW_PADDED)),
            ("1234", Some("000000000000000000000000000004d2")),
            ("0001234", Some("000000000000000000000000000004d2")),
            (
                "18446744073709551615",
                Some("0000000000000000ffffffffffffffff"),
            ),
            ("18446744073709551616", None),
            ("99999999999999999999", None),
            // Negative i64 strings, two's complement.
            ("-1", Some("0000000000000000ffffffffffffffff")),
            (
                "-9223372036854775808",
                Some("00000000000000008000000000000000"),
            ),
            ("-9223372036854775809", None),
            // 128-bit logging: 32 hex as is (any case), even when all digits.
            (T1, Some(T1)),
            ("4BF92F3577B34DA6A3CE929D0E0E4736", Some(T1)),
            (
                "12345678901234567890123456789012",
                Some("12345678901234567890123456789012"),
            ),
            // Absent or malformed.
            ("0", None),
            ("-0", None),
            ("00000000000000000000000000000000", None),
            ("", None),
            ("-", None),
            ("+5", None),
            (" 5", None),
            ("12a", None),
            ("1.5", None),
            ("1e3", None),
            ("a3ce929d0e0e4736", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                trace_hex(input, Format::Datadog).as_deref(),
                *want,
                "trace_id({input:?}, Datadog)"
            );
        }
    }

    #[test]
    fn datadog_span_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (S1_DEC, Some(S1)),
            ("18446744073709551615", Some("ffffffffffffffff")),
            ("-1", Some("ffffffffffffffff")),
            // 16 characters with a hex letter: hex. 16 digits: decimal.
            (S1, Some(S1)),
            ("1234567890123456", Some("000462d53c8abac0")),
            ("0", None),
            ("", None),
            ("00f067aa0ba902b", None),
            ("18446744073709551616", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                span_hex(input, Format::Datadog).as_deref(),
                *want,
                "span_id({input:?}, Datadog)"
            );
        }
    }

    // --- X-Ray ---

    #[test]
    fn xray_reference_example() {
        assert_eq!(
            trace_hex(XRAY_ROOT, Format::Xray).as_deref(),
            Some(XRAY_TRACE)
        );
        assert_eq!(
            ctx_of(XRAY_ROOT, Format::Xray),
            Some(ctx(XRAY_TRACE, None, None))
        );
    }

    #[test]
    fn xray_header() {
        let header = format!("Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1");
        let want = ctx(XRAY_TRACE, Some(XRAY_PARENT), Some(1));
        assert_eq!(ctx_of(&header, Format::Xray), Some(want));
        assert_eq!(
            trace_hex(&header, Format::Xray).as_deref(),
            Some(XRAY_TRACE)
        );
        assert_eq!(
            span_hex(&header, Format::Xray).as_deref(),
            Some(XRAY_PARENT)
        );

        let variants = [
            format!("Sampled=1;Parent={XRAY_PARENT};Root={XRAY_ROOT}"),
            format!("Root={XRAY_ROOT}; Parent={XRAY_PARENT}; Sampled=1"),
            format!("root={XRAY_ROOT};parent={XRAY_PARENT};sampled=1"),
            format!(
                "Self=1-67891234-12456789abcdef012345678;Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1;Lineage=a87bd80c:1|68fd508a:5"
            ),
            format!(
                "Root={};Parent={};Sampled=1",
                XRAY_ROOT.to_uppercase(),
                XRAY_PARENT.to_uppercase()
            ),
        ];
        for v in &variants {
            assert_eq!(ctx_of(v, Format::Xray), Some(want), "{v}");
        }

        assert_eq!(
            ctx_of(
                &format!("Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=0"),
                Format::Xray
            ),
            Some(ctx(XRAY_TRACE, Some(XRAY_PARENT), Some(0)))
        );
        assert_eq!(
            ctx_of(
                &format!("Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=?"),
                Format::Xray
            ),
            Some(ctx(XRAY_TRACE, Some(XRAY_PARENT), None))
        );
        assert_eq!(
            ctx_of(&format!("Root={XRAY_ROOT}"), Format::Xray),
            Some(ctx(XRAY_TRACE, None, None))
        );
        // An invalid or all-zero parent drops the span, not the trace.
        assert_eq!(
            ctx_of(
                &format!("Root={XRAY_ROOT};Parent=0000000000000000"),
                Format::Xray
            ),
            Some(ctx(XRAY_TRACE, None, None))
        );
        assert_eq!(
            ctx_of(
                &format!("Root={XRAY_ROOT};Parent=xyz;Sampled=1"),
                Format::Xray
            ),
            Some(ctx(XRAY_TRACE, None, Some(1)))
        );
    }

    #[test]
    fn xray_java_mdc_segment() {
        let mdc = format!("{XRAY_ROOT}@{XRAY_PARENT}");
        assert_eq!(trace_hex(&mdc, Format::Xray).as_deref(), Some(XRAY_TRACE));
        // The segment is the current entity's ID: the span.
        assert_eq!(
            ctx_of(&mdc, Format::Xray),
            Some(ctx(XRAY_TRACE, Some(XRAY_PARENT), None))
        );
        // A segment that is not a span ID is ignored.
        assert_eq!(
            ctx_of(&format!("{XRAY_ROOT}@seg"), Format::Xray),
            Some(ctx(XRAY_TRACE, None, None))
        );
    }

    #[test]
    fn xray_malformed() {
        let cases = [
            "",
            "1",
            "2-5759e988-bd862e3fe1be46a994272793",
            "1-5759e988-bd862e3fe1be46a99427279",
            "1-5759e988-bd862e3fe1be46a9942727933",
            "1-5759e98-8bd862e3fe1be46a994272793",
            "1_5759e988-bd862e3fe1be46a994272793",
            "1-5759e98g-bd862e3fe1be46a994272793",
            "1-00000000-000000000000000000000000",
            "Parent=53995c3f42cd8ad8;Sampled=1",
            "Root=;Parent=53995c3f42cd8ad8",
            "Root=5759e988bd862e3fe1be46a994272793",
            XRAY_TRACE,
        ];
        for v in cases {
            assert_eq!(ctx_of(v, Format::Xray), None, "{v:?}");
            assert_eq!(trace_id(v.as_bytes(), Format::Xray), None, "{v:?}");
        }
    }

    // --- GCP ---

    #[test]
    fn gcp_trace_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                "projects/my-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
                Some(T1),
            ),
            (T1, Some(T1)),
            ("4BF92F3577B34DA6A3CE929D0E0E4736", Some(T1)),
            (
                "projects/traces/x/traces/4bf92f3577b34da6a3ce929d0e0e4736",
                Some(T1),
            ),
            ("projects/my-proj/traces/", None),
            (
                "projects/my-proj/traces/00000000000000000000000000000000",
                None,
            ),
            ("projects/my-proj/traces/4bf92f3577b34da6", None),
            (
                "projects/my-proj/traces/4bf92f3577b34da6a3ce929d0e0e4736/",
                None,
            ),
            ("53ce929d0e0e4736", None),
            (
                "projects/my-proj/spans/4bf92f3577b34da6a3ce929d0e0e4736",
                None,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(
                trace_hex(input, Format::Gcp).as_deref(),
                *want,
                "trace_id({input:?}, Gcp)"
            );
        }
    }

    #[test]
    fn gcp_span_ids() {
        let cases: &[(&str, Option<&str>)] = &[
            (S1, Some(S1)),
            ("00F067AA0BA902B7", Some(S1)),
            // All digits, not 16 characters: decimal (Cloud Trace API v1).
            ("1234567890", Some("00000000499602d2")),
            (S1_DEC, Some(S1)),
            // 16 digits: hex.
            ("1234567890123456", Some("1234567890123456")),
            ("0", None),
            ("0000000000000000", None),
            ("", None),
            ("abc", None),
            ("18446744073709551616", None),
        ];
        for (input, want) in cases {
            assert_eq!(
                span_hex(input, Format::Gcp).as_deref(),
                *want,
                "span_id({input:?}, Gcp)"
            );
        }
    }

    // --- traceparent ---

    #[test]
    fn traceparent_versions() {
        let tail = "-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let want = Some(ctx(T1, Some(S1), Some(0x01)));
        let cases: Vec<(String, Option<TraceContext>)> = vec![
            (TP1.into(), want),
            // Our leniency: uppercase is accepted and normalized.
            (TP1.to_uppercase(), want),
            // Version 00 is exactly 55 characters.
            (format!("{TP1}-xyz"), None),
            (format!("{TP1}0"), None),
            (format!("{TP1} "), None),
            // Higher versions: the rest after a `-` is ignored; anything else is not.
            (format!("01{tail}"), want),
            (format!("01{tail}-xyz"), want),
            (format!("cc{tail}-what-the-future-will-be-like"), want),
            (format!("01{tail}xyz"), None),
            (format!("ff{tail}"), None),
            (format!("FF{tail}"), None),
            (format!("0g{tail}"), None),
            // Short, or dashes missing.
            (TP1[..54].into(), None),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7".into(),
                None,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01".into(),
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01".into(),
                None,
            ),
            (
                "004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-0".into(),
                None,
            ),
            // Non-hex in each field.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e473x-00f067aa0ba902b7-01".into(),
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bx-01".into(),
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x".into(),
                None,
            ),
            // All-zero trace is invalid; all-zero parent drops the span only.
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
                None,
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01".into(),
                Some(ctx(T1, None, Some(0x01))),
            ),
            // Flags: the byte as is; test bits with a mask.
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00".into(),
                Some(ctx(T1, Some(S1), Some(0x00))),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03".into(),
                Some(ctx(T1, Some(S1), Some(0x03))),
            ),
        ];
        for (input, want) in &cases {
            assert_eq!(ctx_of(input, Format::Traceparent), *want, "{input:?}");
            assert_eq!(
                trace_id(input.as_bytes(), Format::Traceparent),
                want.map(|c| c.trace_id),
                "{input:?}"
            );
            assert_eq!(
                span_id(input.as_bytes(), Format::Traceparent),
                want.and_then(|c| c.span_id),
                "{input:?}"
            );
        }
        let sampled = ctx_of(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
            Format::Traceparent,
        );
        assert_eq!(sampled.and_then(|c| c.sampled()), Some(true));
    }

    // --- B3 ---

    #[test]
    fn b3_single_header() {
        let p = "00f067aa0ba902b8";
        let cases: Vec<(String, Option<TraceContext>)> = vec![
            (format!("{T1}-{S1}"), Some(ctx(T1, Some(S1), None))),
            (format!("{T1}-{S1}-1"), Some(ctx(T1, Some(S1), Some(1)))),
            (format!("{T1}-{S1}-d"), Some(ctx(T1, Some(S1), Some(1)))),
            (format!("{T1}-{S1}-0"), Some(ctx(T1, Some(S1), Some(0)))),
            (format!("{T1}-{S1}-1-{p}"), Some(ctx(T1, Some(S1), Some(1)))),
            (
                format!("a3ce929d0e0e4736-{S1}-1"),
                Some(ctx(T1_LOW_PADDED, Some(S1), Some(1))),
            ),
            (
                format!("{}-{}-1", T1.to_uppercase(), S1.to_uppercase()),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            // Sampling state alone: no IDs.
            ("0".into(), None),
            ("1".into(), None),
            ("d".into(), None),
            ("".into(), None),
            // Malformed.
            (format!("{T1}-{S1}-x"), None),
            (format!("{T1}-{S1}-"), None),
            (format!("{T1}-{S1}-1-{p}-1"), None),
            (format!("{T1}-{S1}-1-xyz"), None),
            (format!("{T1}-00f067aa0ba902b"), None),
            (format!("3ce929d0e0e4736-{S1}"), None),
            (format!("{T1}-"), None),
            (format!("00000000000000000000000000000000-{S1}-1"), None),
            (
                format!("{T1}-0000000000000000-1"),
                Some(ctx(T1, None, Some(1))),
            ),
        ];
        for (input, want) in &cases {
            assert_eq!(ctx_of(input, Format::B3), *want, "{input:?}");
        }
    }

    // --- Jaeger ---

    #[test]
    fn jaeger_uber_trace_id() {
        let cases: Vec<(&str, Option<TraceContext>)> = vec![
            (
                "4bf92f3577b34da6a3ce929d0e0e4736:00f067aa0ba902b7:0:1",
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            // Leading zeros stripped; debug bit (0x02) is not W3C's random bit.
            (
                "a3ce929d0e0e4736:f067aa0ba902b7:0:3",
                Some(ctx(T1_LOW_PADDED, Some(S1), Some(1))),
            ),
            (
                "abc:def:abc:0",
                Some(ctx(
                    "00000000000000000000000000000abc",
                    Some("0000000000000def"),
                    Some(0),
                )),
            ),
            (
                "abc:0:0:1",
                Some(ctx("00000000000000000000000000000abc", None, Some(1))),
            ),
            ("0:def:0:1", None),
            ("abc:def:0", None),
            ("abc:def:0:1:2", None),
            ("abc:def::1", None),
            ("abc:def:0:100", None),
            ("abc%3Adef%3A0%3A1", None),
        ];
        for (input, want) in &cases {
            assert_eq!(ctx_of(input, Format::Jaeger), *want, "{input:?}");
        }
    }

    // --- flags ---

    #[test]
    fn flag_values() {
        let cases: &[(&str, Option<u8>)] = &[
            ("01", Some(1)),
            ("1", Some(1)),
            ("00", Some(0)),
            ("0", Some(0)),
            ("03", Some(3)),
            ("ff", Some(0xff)),
            ("true", Some(1)),
            ("True", Some(1)),
            ("TRUE", Some(1)),
            ("false", Some(0)),
            ("False", Some(0)),
            ("", None),
            ("001", None),
            ("yes", None),
            ("0x1", None),
            ("-1", None),
            ("g", None),
        ];
        for (input, want) in cases {
            assert_eq!(flags(input.as_bytes()), *want, "flags({input:?})");
        }
    }

    #[test]
    fn context_hex_helpers() {
        let c = ctx(T1, Some(S1), Some(1));
        assert_eq!(&c.trace_id_hex(), T1.as_bytes());
        assert_eq!(
            c.span_id_hex().as_ref().map(|s| &s[..]),
            Some(S1.as_bytes())
        );
        assert_eq!(c.sampled(), Some(true));
        assert_eq!(ctx(T1, None, None).span_id_hex(), None);
        assert_eq!(ctx(T1, None, Some(2)).sampled(), Some(false));
    }

    // --- Families over JSON-like records ---

    /// Runs a JSON object with these pairs through the real walker with the default families;
    /// returns the trace context it settles on.
    fn extract_from(pairs: &[(&str, Scalar<'static>)]) -> Option<TraceContext> {
        let members: Vec<String> = pairs
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Scalar::Str(s) => serde_json::Value::from(std::str::from_utf8(s).unwrap()),
                    Scalar::U64(n) => serde_json::Value::from(*n),
                    Scalar::I64(n) => serde_json::Value::from(*n),
                    Scalar::Bool(b) => serde_json::Value::from(*b),
                };
                format!("{}:{v}", serde_json::Value::from(*k))
            })
            .collect();
        let line = format!("{{{}}}", members.join(","));
        let settings =
            crate::pipeline::Settings::new(&crate::config::Enrich::default().options()).unwrap();
        crate::pipeline::json::parse(
            line.as_bytes(),
            &settings.keys,
            &settings.families,
            &settings.limits,
            None,
        )
        .unwrap()
        .trace
    }

    fn str_(s: &'static str) -> Scalar<'static> {
        Scalar::Str(s.as_bytes())
    }

    #[test]
    fn family_precedence_and_pairing() {
        const TP2: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        // Explicit OTel fields beat traceparent, which beats Datadog; flags are not borrowed.
        let got = extract_from(&[
            ("dd.trace_id", str_("1234")),
            ("traceparent", str_(TP2)),
            ("trace_id", str_(T1)),
            ("span_id", str_(S1)),
        ]);
        assert_eq!(got, Some(ctx(T1, Some(S1), None)));

        let got = extract_from(&[("dd.trace_id", str_("1234")), ("traceparent", str_(TP2))]);
        assert_eq!(
            got.map(|c| c.trace_id),
            Some(t("0af7651916cd43dd8448eb211c80319c"))
        );

        // No cross-family span: trace_id wins, dd.span_id is not used.
        let got = extract_from(&[
            ("trace_id", str_(T1)),
            ("dd.trace_id", str_("1234")),
            ("dd.span_id", str_("5678")),
        ]);
        assert_eq!(got, Some(ctx(T1, None, None)));

        // Nor across naming conventions.
        let got = extract_from(&[("trace_id", str_(T1)), ("spanId", str_(S1))]);
        assert_eq!(got, Some(ctx(T1, None, None)));

        // An invalid value falls through to the next source.
        let got = extract_from(&[
            ("trace_id", str_("00000000000000000000000000000000")),
            ("span_id", str_(S1)),
            ("traceparent", str_(TP2)),
        ]);
        assert_eq!(
            got.map(|c| c.trace_id),
            Some(t("0af7651916cd43dd8448eb211c80319c"))
        );

        // OTel Python writes "0" for no trace.
        let got = extract_from(&[
            ("otelTraceID", str_("0")),
            ("otelSpanID", str_("0")),
            ("otelTraceSampled", Scalar::Bool(false)),
        ]);
        assert_eq!(got, None);
    }

    #[test]
    fn family_scalars() {
        // Datadog numbers, including max u64 and a negative i64.
        let got = extract_from(&[
            ("dd.trace_id", Scalar::U64(u64::MAX)),
            ("dd.span_id", Scalar::I64(-1)),
        ]);
        assert_eq!(
            got,
            Some(ctx(
                "0000000000000000ffffffffffffffff",
                Some("ffffffffffffffff"),
                None
            ))
        );
        let got = extract_from(&[("dd.trace_id", Scalar::I64(1234))]);
        assert_eq!(
            got.map(|c| c.trace_id),
            Some(t("000000000000000000000000000004d2"))
        );
        assert_eq!(extract_from(&[("dd.trace_id", Scalar::U64(0))]), None);

        // A number under a hex key is not read as hex.
        assert_eq!(extract_from(&[("trace_id", Scalar::U64(1234))]), None);
        assert_eq!(extract_from(&[("trace_id", Scalar::Bool(true))]), None);

        // Flags from numbers and booleans.
        let got = extract_from(&[
            ("logging.googleapis.com/trace", str_(T1)),
            ("logging.googleapis.com/spanId", Scalar::U64(1234567890)),
            ("logging.googleapis.com/trace_sampled", Scalar::Bool(true)),
        ]);
        assert_eq!(got, Some(ctx(T1, Some("00000000499602d2"), Some(1))));
        let got = extract_from(&[("trace_id", str_(T1)), ("trace_flags", Scalar::U64(1))]);
        assert_eq!(got.map(|c| c.flags), Some(Some(1)));
        let got = extract_from(&[("trace_id", str_(T1)), ("trace_flags", Scalar::U64(256))]);
        assert_eq!(got.map(|c| c.flags), Some(None));

        // ECS: span.id first, then transaction.id.
        let got = extract_from(&[
            ("trace.id", str_(T1)),
            ("transaction.id", str_("b7ad6b7169203331")),
        ]);
        assert_eq!(got.map(|c| c.span_id), Some(Some(s("b7ad6b7169203331"))));
        let got = extract_from(&[
            ("trace.id", str_(T1)),
            ("span.id", str_(S1)),
            ("transaction.id", str_("b7ad6b7169203331")),
        ]);
        assert_eq!(got.map(|c| c.span_id), Some(Some(s(S1))));
    }

    #[test]
    fn families_deserialize_from_toml() {
        #[derive(serde::Deserialize)]
        struct Config {
            families: Vec<Family>,
        }
        let config: Config = toml::from_str(
            r#"
            [[families]]
            name = "custom"
            trace = ["ctx.tid", "tid"]
            span = ["ctx.sid"]
            format = "hex"

            [[families]]
            name = "legacy"
            trace = ["uber-trace-id"]
            format = "jaeger"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.families,
            vec![
                Family::new(
                    "custom",
                    &["ctx.tid", "tid"],
                    &["ctx.sid"],
                    &[],
                    Format::Hex
                ),
                Family::new("legacy", &["uber-trace-id"], &[], &[], Format::Jaeger),
            ]
        );

        let unknown = toml::from_str::<Config>(
            "[[families]]\nname = \"x\"\ntrace = [\"t\"]\nformat = \"hex\"\nspans = [\"s\"]\n",
        );
        assert!(unknown.is_err());
        let bad_format = toml::from_str::<Config>(
            "[[families]]\nname = \"x\"\ntrace = [\"t\"]\nformat = \"uuid\"\n",
        );
        assert!(bad_format.is_err());
    }

    #[test]
    fn default_families_are_distinct_and_scannable() {
        let families = default_families();
        let mut keys: Vec<&str> = families
            .iter()
            .flat_map(|f| f.trace.iter().chain(&f.span).chain(&f.flags))
            .map(String::as_str)
            .collect();
        let total = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), total);
        let mut names: Vec<&str> = families.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), families.len());
        assert!(TextScanner::try_with_families(&default_text_families()).is_ok());
    }

    // --- Text scanner ---

    fn scan(line: &str) -> Option<TraceContext> {
        TextScanner::new().scan(line.as_bytes())
    }

    #[test]
    fn text_positives() {
        let tp2 = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let both = Some(ctx(T1, Some(S1), None));
        let cases: Vec<(String, Option<TraceContext>)> = vec![
            (format!("INFO charged trace_id={T1} span_id={S1}"), both),
            (
                format!("trace_id={T1} span_id={S1} trace_flags=01"),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            (format!("span_id={S1} x=1 trace_id={T1}"), both),
            (format!("trace_id: {T1} span_id:{S1}"), both),
            (format!("trace_id = {T1}\tspan_id =\t{S1}"), both),
            (format!("trace_id=\"{T1}\" span_id='{S1}'"), both),
            (
                format!("payload {{\"trace_id\": \"{T1}\", \"span_id\": \"{S1}\"}}"),
                both,
            ),
            (
                format!("payload {{\\\"trace_id\\\":\\\"{T1}\\\",\\\"span_id\\\":\\\"{S1}\\\"}}"),
                both,
            ),
            (format!("[trace_id={T1},span_id={S1}]"), both),
            (
                format!("trace_id={T1}. next sentence"),
                Some(ctx(T1, None, None)),
            ),
            (format!("traceId={T1} spanId={S1}"), both),
            (format!("traceID={T1} spanID={S1}"), both),
            (format!("trace.id={T1} span.id={S1}"), both),
            (
                format!("trace_id={}", T1.to_uppercase()),
                Some(ctx(T1, None, None)),
            ),
            (
                "trace_id=a3ce929d0e0e4736".into(),
                Some(ctx(T1_LOW_PADDED, None, None)),
            ),
            (
                format!("dd.service=shop dd.trace_id={T1_LOW_DEC} dd.span_id={S1_DEC}"),
                Some(ctx(T1_LOW_PADDED, Some(S1), None)),
            ),
            (
                format!("dd.trace_id=\"{T1_LOW_DEC}\""),
                Some(ctx(T1_LOW_PADDED, None, None)),
            ),
            (format!("dd.trace_id={T1}"), Some(ctx(T1, None, None))),
            (
                format!("GET /x traceparent={TP1} 200"),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            (
                format!("traceparent: \"{TP1}\""),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            (
                format!("traceparent=01-{}-xyz", &TP1[3..]),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            (
                format!("GET /x 200 {TP1}"),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            (TP1.to_owned(), Some(ctx(T1, Some(S1), Some(1)))),
            (format!("[{TP1}]"), Some(ctx(T1, Some(S1), Some(1)))),
            (
                format!("ctx={}.", TP1.to_uppercase()),
                Some(ctx(T1, Some(S1), Some(1))),
            ),
            // Priority: traceparent > OTel-style > Datadog, whatever the order in the line.
            (
                format!("trace_id={T1} span_id={S1} {tp2}"),
                Some(ctx(
                    "0af7651916cd43dd8448eb211c80319c",
                    Some("b7ad6b7169203331"),
                    Some(0),
                )),
            ),
            (
                format!("dd.trace_id=1234 dd.span_id=5 trace_id={T1}"),
                Some(ctx(T1, None, None)),
            ),
            (
                format!("traceId={T1} trace_id=0af7651916cd43dd8448eb211c80319c"),
                Some(ctx("0af7651916cd43dd8448eb211c80319c", None, None)),
            ),
            // Family rule: no dd trace with an OTel span, and the reverse.
            (
                format!("dd.trace_id=1234 span_id={S1}"),
                Some(ctx("000000000000000000000000000004d2", None, None)),
            ),
            (
                format!("trace_id={T1} dd.span_id=5678"),
                Some(ctx(T1, None, None)),
            ),
            (
                format!("trace_id={T1} spanId={S1}"),
                Some(ctx(T1, None, None)),
            ),
            // Within a family, the first valid occurrence wins; invalid ones are skipped.
            (
                format!("trace_id=0000000000000000 trace_id={T1} span_id=0 span_id={S1}"),
                both,
            ),
            (
                format!("trace_id={T1} trace_id=0af7651916cd43dd8448eb211c80319c"),
                Some(ctx(T1, None, None)),
            ),
        ];
        for (line, want) in &cases {
            assert_eq!(scan(line), *want, "{line}");
        }
    }

    #[test]
    fn text_negatives() {
        let cases = [
            // Inside a longer word.
            format!("xtrace_id={T1}"),
            format!("my-trace_id={T1}"),
            format!("foo.trace_id={T1}"),
            format!("mytraceId={T1}"),
            format!("trace_id_hash={T1}"),
            format!("trace_idx={T1}"),
            // Separator missing.
            format!("trace_id {T1}"),
            format!("trace_id{T1}"),
            format!("trace_id - {T1}"),
            // Request IDs and hashes under other keys.
            format!("request_id={T1}"),
            "request_id=a0bc7a42d3f8c3c5e24fb9e7 remote=10.51.234.58:24261".into(),
            format!("sha={T1} commit {S1}"),
            format!("x-request-id: {T1}"),
            // Malformed values.
            "trace_id=4bf92f3577b34da6a3ce929d0e0e473".into(),
            format!("trace_id={T1}0"),
            format!("trace_id={T1}g"),
            "trace_id=4bf92f35-77b3-4da6-a3ce-929d0e0e4736".into(),
            "trace_id=abc".into(),
            "trace_id=00000000000000000000000000000000".into(),
            format!("trace_id=\"{T1}"),
            format!("trace_id=\"{T1}'"),
            format!("trace_id={T1}_x"),
            "dd.trace_id=0 dd.span_id=0".into(),
            "dd.trace_id=-0".into(),
            "dd.trace_id=18446744073709551616".into(),
            // Span or flags without a trace.
            format!("span_id={S1} trace_flags=01"),
            // Bare traceparent inside a longer token, or malformed.
            format!("1{TP1}"),
            format!("x-{TP1}"),
            format!("{TP1}0"),
            format!("{TP1}-01"),
            TP1[..54].into(),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01".into(),
            format!("traceparent={TP1}-xyz"),
            format!("traceparent=ff{}", &TP1[2..]),
            // Spring's positional [app,traceId,spanId] is not supported (too ambiguous).
            format!("INFO [shop,{T1},{S1}] charged"),
            // Nothing at all.
            String::new(),
            "2023-11-14T22:13:20.050Z INFO [checkout-api] auth/jwt.go:57: user session refreshed method=POST path=/api/v1/users/6307612/sessions status=500 dur=788ms request_id=a0bc7a42d3f8c3c5e24fb9e7".into(),
            "2000-01-01 00:00:00-00:00 trace_id:".into(),
            "trace_id=".into(),
            "trace_id".into(),
        ];
        for line in &cases {
            assert_eq!(scan(line), None, "{line}");
        }
    }

    #[test]
    fn text_value_length_is_bounded() {
        let long = format!("trace_id={}", "a".repeat(MAX_TEXT_VALUE + 10));
        assert_eq!(scan(&long), None);
        // Many keys in one line stay linear and still find the valid one at the end.
        let mut line = "trace_id=zz ".repeat(10_000);
        line.push_str(&format!("trace_id={T1}"));
        assert_eq!(scan(&line), Some(ctx(T1, None, None)));
    }

    #[test]
    fn text_custom_families() {
        let families = vec![
            Family::new("req", &["tid"], &["sid"], &["sampled"], Format::Hex),
            Family::new("aws", &["X-Amzn-Trace-Id"], &[], &[], Format::Xray),
            Family::new("gcp", &["gtrace"], &["gspan"], &[], Format::Gcp),
            Family::new("jaeger", &["uber-trace-id"], &[], &[], Format::Jaeger),
            Family::new("b3", &["b3"], &[], &[], Format::B3),
        ];
        let scanner = TextScanner::try_with_families(&families).unwrap();
        let scan = |line: &str| scanner.scan(line.as_bytes());
        assert_eq!(
            scan(&format!("tid={T1} sid={S1} sampled=true")),
            Some(ctx(T1, Some(S1), Some(1)))
        );
        assert_eq!(
            scan(&format!(
                "X-Amzn-Trace-Id=Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1 status=200"
            )),
            Some(ctx(XRAY_TRACE, Some(XRAY_PARENT), Some(1)))
        );
        assert_eq!(
            scan(&format!(
                "gtrace=\"projects/p-1/traces/{T1}\" gspan=1234567890"
            )),
            Some(ctx(T1, Some("00000000499602d2"), None))
        );
        assert_eq!(
            scan("uber-trace-id=abc:def:0:1"),
            Some(ctx(
                "00000000000000000000000000000abc",
                Some("0000000000000def"),
                Some(1)
            ))
        );
        assert_eq!(
            scan(&format!("b3={T1}-{S1}-d")),
            Some(ctx(T1, Some(S1), Some(1)))
        );
        assert_eq!(scan("b3=0"), None);
        // No traceparent family: a bare traceparent is not looked for.
        assert_eq!(scan(TP1), None);
    }

    #[test]
    fn text_scanner_config_errors() {
        let f = |name: &str, trace: &[&str], span: &[&str]| {
            Family::new(name, trace, span, &[], Format::Hex)
        };
        let too_many: Vec<Family> = (0..=MAX_TEXT_FAMILIES)
            .map(|i| f("x", &[&format!("k{i}")], &[]))
            .collect();
        assert_eq!(
            TextScanner::try_with_families(&too_many).unwrap_err(),
            ScannerError::TooManyFamilies(MAX_TEXT_FAMILIES + 1)
        );
        assert_eq!(
            TextScanner::try_with_families(&[f("a", &[], &["s"])]).unwrap_err(),
            ScannerError::NoTraceKey("a".into())
        );
        assert_eq!(
            TextScanner::try_with_families(&[f("a", &["t", ""], &[])]).unwrap_err(),
            ScannerError::EmptyKey("a".into())
        );
        assert_eq!(
            TextScanner::try_with_families(&[f("a", &["t"], &[]), f("b", &["u"], &["t"])])
                .unwrap_err(),
            ScannerError::DuplicateKey("t".into())
        );
        assert!(
            TextScanner::try_with_families(&[])
                .unwrap()
                .scan(TP1.as_bytes())
                .is_none()
        );
        let err = ScannerError::DuplicateKey("t".into()).to_string();
        assert!(err.contains("\"t\""), "{err}");
    }

    /// Every truncation and every single-byte corruption of valid inputs, in every format:
    /// nothing panics, and nothing invalid turns into an all-zero ID.
    #[test]
    fn no_panics_on_mangled_input() {
        let scanner = TextScanner::new();
        let formats = [
            Format::Hex,
            Format::Datadog,
            Format::Traceparent,
            Format::B3,
            Format::Xray,
            Format::Gcp,
            Format::Jaeger,
        ];
        let seeds = [
            TP1.to_owned(),
            format!("Root={XRAY_ROOT};Parent={XRAY_PARENT};Sampled=1"),
            format!("{XRAY_ROOT}@{XRAY_PARENT}"),
            format!("projects/p/traces/{T1}"),
            format!("{T1}-{S1}-1-{S1}"),
            "abc:def:0:1".to_owned(),
            format!("-{T1_LOW_DEC}"),
            format!("trace_id=\"{T1}\" span_id={S1} dd.trace_id=1 {TP1}"),
        ];
        let replacements = [b'0', b'-', b'"', b'=', b':', b';', b'@', b'/', b'\\', 0xff];
        for seed in &seeds {
            let seed = seed.as_bytes();
            let mut inputs: Vec<Vec<u8>> = (0..=seed.len()).map(|n| seed[..n].to_vec()).collect();
            for i in 0..seed.len() {
                for r in replacements {
                    let mut v = seed.to_vec();
                    v[i] = r;
                    inputs.push(v);
                }
            }
            for input in &inputs {
                for format in formats {
                    if let Some(id) = trace_id(input, format) {
                        assert_ne!(id, [0; 16]);
                    }
                    if let Some(id) = span_id(input, format) {
                        assert_ne!(id, [0; 8]);
                    }
                    if let Some(c) = context(input, format) {
                        assert_ne!(c.trace_id, [0; 16]);
                        assert_ne!(c.span_id, Some([0; 8]));
                    }
                }
                flags(input);
                if let Some(c) = scanner.scan(input) {
                    assert_ne!(c.trace_id, [0; 16]);
                }
            }
        }
    }
}
