"""Sends events to a forward-protocol server with PyPI's fluent-logger, the way Python
applications do. Used by tests/it/clients.rs, which checks what arrived.

Usage: python3 fluent_logger_client.py HOST PORT N

Sends N events of each kind, in this order, each kind's events numbered by `i`:

  py.emit        emit(): integer time of now, a record of many value types
  py.int         emit_with_time() with an int time: 1700000000 + i
  py.float       emit_with_time() with a float time: 1700000000 + i + 0.25
  py.now         emit_with_time() with time.time() (a float)
  py.nano        emit() with nanosecond_precision=True (EventTime of now)
  py.eventtime   EventTime.from_unix_nano(1700000000123456789 + i)
  py.nanofloat   float time on a nanosecond sender: EventTime(1700000000 + i + 0.5)
  py.logging     the logging handler: info({"i": i, ...}) then warning("text %d", i)

Exits non-zero, naming the error, when a send fails.
"""

import logging
import sys
import time

from fluent import handler, sender

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


def send(s, ok):
    if not ok:
        sys.exit(f"fluent-logger failed to send: {s.last_error!r}")


plain = sender.FluentSender("py", host=host, port=port)
for i in range(n):
    record = {
        "i": i,
        "msg": 'héllo "world" ✓',
        "ok": True,
        "none": None,
        "f": 1.5,
        "neg": -7,
        "big": 2**40,
        "list": [1, "two", {"three": 3}],
        "bin": b"\x00\x01\xff",
    }
    send(plain, plain.emit("emit", record))
for i in range(n):
    send(plain, plain.emit_with_time("int", 1_700_000_000 + i, {"i": i}))
for i in range(n):
    send(plain, plain.emit_with_time("float", 1_700_000_000 + i + 0.25, {"i": i}))
for i in range(n):
    send(plain, plain.emit_with_time("now", time.time(), {"i": i}))
plain.close()

nano = sender.FluentSender("py", host=host, port=port, nanosecond_precision=True)
for i in range(n):
    send(nano, nano.emit("nano", {"i": i}))
for i in range(n):
    t = sender.EventTime.from_unix_nano(1_700_000_000_123_456_789 + i)
    send(nano, nano.emit_with_time("eventtime", t, {"i": i}))
for i in range(n):
    send(nano, nano.emit_with_time("nanofloat", 1_700_000_000 + i + 0.5, {"i": i}))
nano.close()

h = handler.FluentHandler("py.logging", host=host, port=port)
h.setFormatter(handler.FluentRecordFormatter({"level": "%(levelname)s", "logger": "%(name)s"}))
log = logging.getLogger("outrigger-test")
log.propagate = False
log.setLevel(logging.INFO)
log.addHandler(h)
for i in range(n):
    log.info({"i": i, "msg": "a dict message"})
    log.warning("text %d", i)
# The handler swallows send errors; its sender remembers the last one.
err = h.sender.last_error
h.close()
if err is not None:
    sys.exit(f"fluent-logger's logging handler failed to send: {err!r}")
