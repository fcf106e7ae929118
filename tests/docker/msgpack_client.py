"""Speaks the forward protocol with PyPI's msgpack directly: every request mode, each request
with a `chunk` option, waiting for its `{"ack": chunk}` before sending the next. Used by
tests/it/clients.rs, which checks what arrived; this script checks the acks.

Usage: python3 msgpack_client.py HOST PORT N

Over one TCP connection, entries numbered by `i` (0..N), base time T = 1700000000:

  raw.message     Message mode, one request per event: [tag, T + i, {"i": i}, {chunk}]
  raw.forward     Forward mode, one request: [tag, [[time, {"i": i}], ...], {chunk}], where
                  time is T + i (int), T + i + 0.75 (float) or EventTime(T + i, i) for
                  i % 3 == 0, 1, 2
  raw.packed      PackedForward, one request: [tag, bin(entries), {chunk, size}],
                  entries [EventTime(T, i), {"i": i}]
  raw.packedstr   the same with the entries as a msgpack str, as legacy clients send them
  raw.compressed  CompressedPackedForward: [tag, gzip(entries), {chunk, size, compressed}]

Exits non-zero, naming the problem, when an ack is missing or wrong.
"""

import base64
import gzip
import os
import socket
import struct
import sys

import msgpack

host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
T = 1_700_000_000

sock = socket.create_connection((host, port), timeout=10)
unpacker = msgpack.Unpacker(raw=False)


def event_time(secs, nanos):
    return msgpack.ExtType(0, struct.pack(">II", secs, nanos))


def request(message, use_bin_type=True):
    chunk = base64.b64encode(os.urandom(16)).decode()
    message = list(message)
    message[-1] = dict(message[-1], chunk=chunk)
    sock.sendall(msgpack.packb(message, use_bin_type=use_bin_type))
    while True:
        for reply in unpacker:
            if reply != {"ack": chunk}:
                sys.exit(f"{message[0]}: expected ack {chunk!r}, got {reply!r}")
            return
        data = sock.recv(4096)
        if not data:
            sys.exit(f"{message[0]}: connection closed while waiting for ack {chunk!r}")
        unpacker.feed(data)


for i in range(n):
    request(["raw.message", T + i, {"i": i}, {}])


def forward_time(i):
    return [T + i, T + i + 0.75, event_time(T + i, i)][i % 3]


request(["raw.forward", [[forward_time(i), {"i": i}] for i in range(n)], {}])

entries = b"".join(msgpack.packb([event_time(T, i), {"i": i}]) for i in range(n))
request(["raw.packed", entries, {"size": n}])
request(["raw.packedstr", entries, {"size": n}], use_bin_type=False)
request(["raw.compressed", gzip.compress(entries), {"size": n, "compressed": "gzip"}])
sock.close()
