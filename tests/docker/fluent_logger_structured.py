"""Sends structured records with PyPI's fluent-logger, the way Python applications log: the
fields are the record itself, with no `log` line. Used by tests/it/structured.rs, which
checks that every exporter got the trace context, level and message out of them.

Usage: python3 fluent_logger_structured.py HOST PORT N

For each i in 0..N, one event of each form below (tag `py.<form>`), each record carrying
`i`, a `count` (int), a `ratio` (float) and an `ok` (bool). Trace and span IDs are
T(i) = 0x4bf92f3577b34da6a3ce929d0e0e4736 + i and S(i) = 0x00f067aa0ba902b7 + i, written as
each form writes them:

  snake        sync sender, int time 1700000000 + i: message, level, trace_id, span_id
  float        sync sender, float time 1700000000 + i + 0.25: same fields
  eventtime    nanosecond sender, EventTime 1700000000.123456789 + i ns: same fields
  async        asyncsender: same fields, time of now
  camel        msg, severity, traceId, spanId
  traceparent  message, lvl, traceparent 00-T-S-01
  datadog      message, status, dd: {trace_id, span_id} as integers (T's low 64 bits)
  nested       message, level, context: {trace_id, span_id}
  otel         message, level, otel: {trace_id, span_id}

Exits non-zero, naming the error, when a send fails.
"""

import sys
import time

from fluent import asyncsender, sender

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

T0 = 0x4BF92F3577B34DA6A3CE929D0E0E4736
S0 = 0x00F067AA0BA902B7


def trace(i):
    return f"{T0 + i:032x}"


def span(i):
    return f"{S0 + i:016x}"


def common(i):
    return {"i": i, "count": i * 3, "ratio": i + 0.5, "ok": i % 2 == 0}


def snake(i, form):
    return {
        **common(i),
        "message": f"{form} message {i}",
        "level": "warning",
        "trace_id": trace(i),
        "span_id": span(i),
    }


def send(s, ok):
    if not ok:
        sys.exit(f"fluent-logger failed to send: {s.last_error!r}")


plain = sender.FluentSender("py", host=host, port=port)
for i in range(n):
    send(plain, plain.emit_with_time("snake", 1_700_000_000 + i, snake(i, "snake")))
for i in range(n):
    send(plain, plain.emit_with_time("float", 1_700_000_000 + i + 0.25, snake(i, "float")))
for i in range(n):
    record = {**common(i), "msg": f"camel message {i}", "severity": "ERROR",
              "traceId": trace(i), "spanId": span(i)}
    send(plain, plain.emit("camel", record))
for i in range(n):
    record = {**common(i), "message": f"traceparent message {i}", "lvl": "info",
              "traceparent": f"00-{trace(i)}-{span(i)}-01"}
    send(plain, plain.emit("traceparent", record))
for i in range(n):
    low = (T0 + i) & 0xFFFFFFFFFFFFFFFF
    record = {**common(i), "message": f"datadog message {i}", "status": "error",
              "dd": {"trace_id": low, "span_id": S0 + i}}
    send(plain, plain.emit("datadog", record))
for i in range(n):
    record = {**common(i), "message": f"nested message {i}", "level": "debug",
              "context": {"trace_id": trace(i), "span_id": span(i)}}
    send(plain, plain.emit("nested", record))
for i in range(n):
    record = {**common(i), "message": f"otel message {i}", "level": "info",
              "otel": {"trace_id": trace(i), "span_id": span(i)}}
    send(plain, plain.emit("otel", record))
plain.close()

nano = sender.FluentSender("py", host=host, port=port, nanosecond_precision=True)
for i in range(n):
    t = sender.EventTime.from_unix_nano(1_700_000_000_123_456_789 + i)
    send(nano, nano.emit_with_time("eventtime", t, snake(i, "eventtime")))
nano.close()

# The asynchronous sender queues and sends from a thread; close() flushes it.
background = asyncsender.FluentSender("py", host=host, port=port)
for i in range(n):
    send(background, background.emit("async", snake(i, "async")))
background.close()
if background.last_error is not None:
    sys.exit(f"fluent-logger's async sender failed: {background.last_error!r}")
# Give the server a moment to take the last bytes before the process ends.
time.sleep(0.2)
