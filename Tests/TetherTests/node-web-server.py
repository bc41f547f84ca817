#!/usr/bin/env python3
"""A node's HTTPS server for the front door tests (README "Front door"), as a kube API server
or a node's management UI would be: Python's own http.server and ssl, one thread per connection.

    node-web-server.py PORT CERTIFICATE KEY

GET /api answers a Kubernetes APIVersions document (what `kubectl get --raw /api` reads);
GET /together/N answers only once N such requests are waiting at the same time (503 after two
minutes), so a client's concurrency is proven end to end; any other GET answers a line naming the
path; PUT and POST answer the SHA-256 and length of the body they read, so an upload is checked
end to end.
"""
import hashlib
import http.server
import json
import ssl
import sys
import threading

barriers = {}
barriers_lock = threading.Lock()


def barrier(parties):
    with barriers_lock:
        return barriers.setdefault(parties, threading.Barrier(parties, timeout=120))


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def answer(self, body, content_type):
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/api":
            versions = {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}],
            }
            self.answer(json.dumps(versions), "application/json")
        elif self.path.startswith("/together/"):
            parties = int(self.path.split("/")[2])
            try:
                barrier(parties).wait()
            except threading.BrokenBarrierError:
                self.send_error(503, "fewer than %d requests came together" % parties)
                return
            self.answer("together %d\n" % parties, "text/plain")
        else:
            self.answer("node web server: %s\n" % self.path, "text/plain")

    def do_PUT(self):
        remaining = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.sha256()
        read = 0
        while remaining > 0:
            chunk = self.rfile.read(min(1 << 16, remaining))
            if not chunk:
                break
            digest.update(chunk)
            read += len(chunk)
            remaining -= len(chunk)
        self.answer(json.dumps({"octets": read, "sha256": digest.hexdigest()}), "application/json")

    do_POST = do_PUT


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # 200 CONNECTs at once reach it at once


def main():
    port, certificate, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    server = Server(("127.0.0.1", port), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(certificate, key)
    # The handshake in each connection's thread, not in the accepting one.
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    server.serve_forever()


if __name__ == "__main__":
    main()
