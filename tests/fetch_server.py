"""A real HTTP server on 127.0.0.1 for the fetch tests: routes that serve, redirect, throttle, fail,
stream too much or too slowly. It records every request (path and Host header)."""

from __future__ import annotations

import io
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from PIL import Image


def png_bytes(color=(200, 10, 10), size=(32, 32)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


class LocalServer:
    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []  # (path, Host header)
        self.counters: dict[str, int] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.images: dict[str, bytes] = {"/img.png": png_bytes()}
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if "Transfer-Encoding" not in (headers or {}):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                with server.lock:
                    server.requests.append((self.path, self.headers.get("Host", "")))
                    server.counters[self.path] = server.counters.get(self.path, 0) + 1
                    count = server.counters[self.path]
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                try:
                    self.route(count)
                finally:
                    with server.lock:
                        server.in_flight -= 1

            def route(self, count: int) -> None:
                path = self.path
                port = server.port
                if path in server.images:
                    self.send(200, server.images[path], {"Content-Type": "image/png"})
                elif path.startswith("/slow-img/"):
                    time.sleep(0.05)
                    self.send(200, server.images["/img.png"], {"Content-Type": "image/png"})
                elif path == "/redirect-loopback":
                    self.send(302, headers={"Location": f"http://127.0.0.1:{port}/img.png"})
                elif path == "/redirect-metadata":
                    self.send(302, headers={"Location": "http://169.254.169.254/latest/meta-data/"})
                elif path == "/redirect-decimal":
                    self.send(301, headers={"Location": f"http://2130706433:{port}/img.png"})
                elif path.startswith("/chain/"):
                    n = int(path.rsplit("/", 1)[1])
                    self.send(302, headers={"Location": f"/chain/{n + 1}" if n < 10 else "/img.png"})
                elif path == "/429-once":
                    if count == 1:
                        self.send(429, b"slow down", {"Retry-After": "1"})
                    else:
                        self.send(200, server.images["/img.png"])
                elif path == "/503-twice":
                    if count <= 2:
                        self.send(503, b"busy")
                    else:
                        self.send(200, server.images["/img.png"])
                elif path == "/500-always":
                    self.send(500, b"broken")
                elif path == "/429-long":
                    self.send(429, b"come back tomorrow", {"Retry-After": "86400"})
                elif path == "/404":
                    self.send(404, b"no")
                elif path == "/big-declared":
                    self.send(200, b"x" * (2 * 1024 * 1024))
                elif path == "/big-chunked":
                    self.send_response(200)
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    block = b"x" * 65536
                    try:
                        for _ in range(64):
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(block), block))
                        self.wfile.write(b"0\r\n\r\n")
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif path == "/drip":
                    self.send_response(200)
                    self.send_header("Content-Length", "100")
                    self.end_headers()
                    try:
                        for _ in range(100):
                            self.wfile.write(b"x")
                            self.wfile.flush()
                            time.sleep(0.2)
                    except (BrokenPipeError, ConnectionResetError):
                        pass
                elif path == "/stall":
                    time.sleep(3)
                    self.send(200, b"late")
                else:
                    self.send(404, b"unknown")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def __enter__(self) -> "LocalServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def self_signed(tmp_path, hostname: str):
    """A certificate for hostname, its key, and a client SSLContext that trusts only it."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    client = ssl.create_default_context(cafile=str(cert_path))
    return cert_path, key_path, client


class TLSServer(LocalServer):
    """The same routes over HTTPS with a certificate for one hostname."""

    def __init__(self, cert_path, key_path) -> None:
        import ssl

        super().__init__()
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_path, key_path)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"https://{host}:{self.port}{path}"
