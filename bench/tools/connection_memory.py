#!/usr/bin/env python3
"""Coordinator memory per open connection, measured apart from everything else.

Starts `HAKKEN coordinator` on core 0 (one listing, service s11), opens N
connections to it from this process and reports the coordinator's RSS growth per
connection. MODE is what each connection does before it is held open:

  idle       nothing (the connection is accepted, no request)
  keepalive  one plain GET /v1/listings/s11, answered; the connection stays open
  stream     GET /v1/listings/s11 with Accept: text/event-stream (its first event read)

  python3 bench/tools/connection_memory.py bench/target/release/hakken stream 10000

Used for the memory analysis of section 11 in BENCHMARKS.md.
"""
import resource
import socket
import sys
import time

from started import start


def main():
    binary, mode = sys.argv[1], sys.argv[2]
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 10000
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    coordinator, port = start(
        ["taskset", "-c", "0", binary, "coordinator", "--listen", "127.0.0.1", "--port", "0",
         "--max-streams", "20000", "--max-held-queries", "20000", "--max-connections", "30000"])
    try:
        body = b'{"service":"s11","host":"p:1"}'
        publish = socket.create_connection(("127.0.0.1", port))
        publish.sendall(b"POST /v1/listings HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n\r\n%s"
                        % (len(body), body))
        publish.recv(4096)
        publish.close()
        time.sleep(1)
        before = rss_kb(coordinator.pid)
        held = []
        for i in range(n):
            connection = socket.create_connection(("127.0.0.1", port))
            if mode == "stream":
                connection.sendall(b"GET /v1/listings/s11 HTTP/1.1\r\nhost: x\r\n"
                                   b"accept: text/event-stream\r\n\r\n")
                connection.recv(4096)
            elif mode == "keepalive":
                connection.sendall(b"GET /v1/listings/s11 HTTP/1.1\r\nhost: x\r\n\r\n")
                connection.recv(4096)
            held.append(connection)
            if i % 500 == 499:
                time.sleep(0.05)  # the listen backlog never overflows
        time.sleep(2)
        grown = rss_kb(coordinator.pid) - before
        print(f"{mode}: {n} connections, {grown * 1024 // n} bytes of coordinator RSS each")
    finally:
        coordinator.kill()


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main()
