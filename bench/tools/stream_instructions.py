#!/usr/bin/env python3
"""User-space instructions the coordinator spends per stream delivery, under callgrind.

Instructions are counted, not timed: for one binary, two runs counted 3,652 and
3,647 per delivery (section 11's latencies move by 2x from run to run here).
Starts `HAKKEN coordinator` under `valgrind --tool=callgrind`, opens N streams of
one service from this process, makes 5 untimed changes, zeroes the counters, makes
CHANGES changes (each once every stream has the previous one) and reports the
instructions counted over them, divided by CHANGES x N. The kernel's share (the
socket writes) is not counted.

  python3 bench/tools/stream_instructions.py bench/target/release/hakken 1000 30

Used for item 5 of section 11's "what was tried" in BENCHMARKS.md.
"""
import os
import re
import resource
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from started import start


def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
    changes = int(sys.argv[3]) if len(sys.argv) > 3 else 30
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scratch = tempfile.mkdtemp(prefix="hakken-callgrind-")
    out = os.path.join(scratch, "callgrind.out")
    coordinator, port = start(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", binary, "coordinator",
         "--listen", "127.0.0.1", "--port", "0", "--max-streams", str(n + 100)])
    try:
        base = f"http://127.0.0.1:{port}"
        publish(base, 0)
        streams = Streams(port, n)
        streams.wait_for(0)
        for v in range(1, 6):
            publish(base, v)
            streams.wait_for(v)
        callgrind_control("-z", coordinator.pid)
        for v in range(6, 6 + changes):
            publish(base, v)
            streams.wait_for(v)
        callgrind_control("-d", coordinator.pid)
        counted = instructions(out + ".1")
        print(f"{n} streams, {changes} changes: {counted:,} instructions, "
              f"{counted // (n * changes):,} per delivery")
    finally:
        coordinator.kill()
        coordinator.wait()
        shutil.rmtree(scratch, ignore_errors=True)


def publish(base, v):
    body = ('{"service":"s","host":"p:1","v":%d}' % v).encode()
    request = urllib.request.Request(base + "/v1/listings", data=body, method="POST")
    urllib.request.urlopen(request, timeout=60).read()


class Streams:
    """N streams of service s, read without blocking; each remembers its newest v."""

    def __init__(self, port, n):
        self.selector = selectors.DefaultSelector()
        for i in range(n):
            connection = socket.create_connection(("127.0.0.1", port))
            connection.sendall(b"GET /v1/listings/s HTTP/1.1\r\nhost: x\r\n"
                               b"accept: text/event-stream\r\n\r\n")
            connection.setblocking(False)
            self.selector.register(connection, selectors.EVENT_READ, {"tail": b"", "v": -1})
            if i % 500 == 499:
                time.sleep(0.05)  # the listen backlog never overflows
        self.n = n

    def wait_for(self, v):
        """Until every stream has v (at most 5 minutes: callgrind is slow)."""
        have = sum(1 for key in self.selector.get_map().values() if key.data["v"] >= v)
        deadline = time.time() + 300
        while have < self.n:
            if time.time() > deadline:
                sys.exit(f"{have} of {self.n} streams had v={v}")
            for key, _ in self.selector.select(timeout=5):
                state = key.data
                got = key.fileobj.recv(65536)
                if not got:
                    sys.exit("a stream ended")
                state["tail"] = (state["tail"] + got)[-4096:]
                seen = re.findall(rb'"v":(\d+)', state["tail"])
                if seen:
                    newest = int(seen[-1])
                    if state["v"] < v <= newest:
                        have += 1
                    state["v"] = max(state["v"], newest)


def callgrind_control(command, pid):
    subprocess.run(["callgrind_control", command, str(pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def instructions(path):
    """The total of callgrind's dump at PATH, once it is written whole (its total
    comes last)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        if os.path.exists(path):
            with open(path) as dump:
                for line in dump:
                    if line.startswith("totals:"):
                        return int(line.split()[1])
        time.sleep(0.2)
    sys.exit(f"no total in {path}")


if __name__ == "__main__":
    main()
