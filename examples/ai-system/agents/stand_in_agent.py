#!/usr/bin/env python3
"""Stand-in for one agent of the AI system: serves GET /health on its port.

Usage: stand_in_agent.py --name NAME --port PORT
The supervisor also passes AGENT_NAME, AGENT_PORT and AGENT_DEPENDENCIES
("Name=host:port,...") in the environment; /health reports whether each
dependency answers a TCP connect. Logs one line per request to stdout.
"""
import argparse
import json
import os
import signal
import socket
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def parse_deps(text):
    deps = {}
    for item in filter(None, (text or "").split(",")):
        name, _, addr = item.partition("=")
        host, _, port = addr.rpartition(":")
        if name and host and port.isdigit():
            deps[name] = (host, int(port))
    return deps


def reachable(host, port, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", default=os.environ.get("AGENT_NAME", "agent"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("AGENT_PORT", "0")))
    ap.add_argument("--bind", default=os.environ.get("AGENT_BIND", "0.0.0.0"))
    args = ap.parse_args()
    deps = parse_deps(os.environ.get("AGENT_DEPENDENCIES"))
    started = time.time()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.rstrip("/") != "/health":
                self.send_error(404, "only /health is served")
                return
            status = {n: {"address": f"{h}:{p}", "reachable": reachable(h, p)} for n, (h, p) in deps.items()}
            body = json.dumps({
                "agent": args.name,
                "status": "ok",
                "pid": os.getpid(),
                "uptime_seconds": round(time.time() - started, 3),
                "dependencies": status,
                "dependencies_ok": all(d["reachable"] for d in status.values()),
            }).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, fmt, *a):
            print(f"{args.name}: {self.address_string()} {fmt % a}", flush=True)

    server = ThreadingHTTPServer((args.bind, args.port), Handler)
    server.daemon_threads = True

    def stop(signum, _frame):
        print(f"{args.name}: received signal {signum}, stopping", flush=True)
        server.shutdown_request = True
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"{args.name}: listening on {args.bind}:{server.server_address[1]}, "
          f"dependencies: {', '.join(deps) or 'none'}", flush=True)
    try:
        server.serve_forever(poll_interval=0.5)
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
