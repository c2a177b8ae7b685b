"""A real registry (CNCF distribution 2.8, Debian's `docker-registry`) on loopback for tests.

Tests pull from the real thing rather than a mock so that the engine meets real auth
challenges, real redirects/Location headers and real digests. Three auth modes: anonymous,
htpasswd (Basic) and token (a tiny in-process token server issuing RS256 JWTs that the
registry verifies against a throwaway self-signed certificate).
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import json
import secrets
import socket
import subprocess
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from imagekit import RegistryClient

REGISTRY_BIN = Path("/usr/bin/docker-registry")
SERVICE = "vmctl-test-registry"
ISSUER = "vmctl-test-token-issuer"
START_TIMEOUT = 10.0


def _free_port() -> int:
    """A currently free loopback port (the registry cannot bind port 0 and report it back)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _b64url(data: bytes) -> str:
    """Unpadded base64url, as JWS wants."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd line; the registry accepts only bcrypt. Cost 4 keeps requests fast."""
    with warnings.catch_warnings():  # `crypt` is deprecated (gone in 3.13), fine on 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt
    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    if not hashed or not hashed.startswith("$2"):
        raise RuntimeError("libcrypt has no bcrypt support; cannot write an htpasswd file")
    return f"{username}:{hashed}\n"


# --------------------------------------------------------------------------- token server


@functools.cache
def _signing_material() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """One RSA key and self-signed cert per test process (keygen is the slow part)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ISSUER)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def parse_scopes(values: list[str]) -> list[dict[str, Any]]:
    """`repository:NAME:pull,push` scopes (space-separated or repeated) -> JWT `access`."""
    access = []
    for scope in " ".join(values).split():
        head, _, actions = scope.rpartition(":")
        type_, _, name = head.partition(":")
        access.append({"type": type_, "name": name, "actions": actions.split(",")})
    return access


class TokenServer:
    """Issues registry JWTs to holders of the right Basic credentials; 401 for anyone else."""

    def __init__(self, username: str, password: str, ttl: int = 300):
        self.username, self.password, self.ttl = username, password, ttl
        self.key, self.cert = _signing_material()
        self.requests = 0
        self.scopes_seen: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self.realm = f"http://127.0.0.1:{self._httpd.server_address[1]}/token"
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()

    def cert_pem(self) -> bytes:
        """The certificate the registry trusts (its `rootcertbundle`)."""
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, subject: str, access: list[dict[str, Any]]) -> str:
        """A signed RS256 JWT in the claim shape distribution 2.8 checks."""
        # x5c is standard (padded, non-url) base64 DER; 2.8 rejects the url-safe alphabet.
        x5c = base64.b64encode(self.cert.public_bytes(serialization.Encoding.DER)).decode()
        header = {"typ": "JWT", "alg": "RS256", "x5c": [x5c]}
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "sub": subject,
            "aud": SERVICE,  # 2.8 rejects a list here; exp is required, nbf optional
            "exp": now + self.ttl,
            "nbf": now - 5,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": access,
        }
        signing_input = ".".join(_b64url(json.dumps(part).encode()) for part in (header, claims))
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return f"{signing_input}.{_b64url(sig)}"

    def authorised(self, header: str | None) -> bool:
        """True for `Basic` with exactly our username and password."""
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, pw = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return False
        return secrets.compare_digest(f"{user}:{pw}", f"{self.username}:{self.password}")

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server._answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # keep pytest output clean

        return Handler

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        """Count the request; 401 without valid credentials, else a token for the scopes asked."""
        query = parse_qs(urlsplit(h.path).query)
        with self._lock:
            self.requests += 1
            self.scopes_seen += query.get("scope", [])
        if not self.authorised(h.headers.get("Authorization")):
            self._reply(h, 401, {"errors": [{"code": "UNAUTHORIZED"}]}, realm=True)
            return
        token = self.issue(self.username, parse_scopes(query.get("scope", [])))
        self._reply(h, 200, {"token": token, "access_token": token, "expires_in": self.ttl})

    def _reply(self, h: BaseHTTPRequestHandler, code: int, body: Any, realm: bool = False) -> None:
        data = json.dumps(body).encode()
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if realm:
            h.send_header("WWW-Authenticate", 'Basic realm="vmctl-test-token"')
        h.end_headers()
        h.wfile.write(data)

    def stop(self) -> None:
        """Shut the HTTP server down."""
        self._httpd.shutdown()
        self._httpd.server_close()


# --------------------------------------------------------------------------- registry


class Registry:
    """A `docker-registry serve` process on 127.0.0.1 with filesystem storage in `workdir`.

    Started by the constructor (it either answers /v2/ or raises with its log tail).
    `auth` is None (anonymous), "htpasswd" (Basic) or "token" (Bearer via `self.token_server`);
    authenticated modes accept `username`/`password`.
    """

    def __init__(
        self,
        workdir: Path,
        auth: str | None = None,
        username: str = "tester",
        password: str = "secret",
    ):
        if not REGISTRY_BIN.is_file():
            raise RuntimeError(f"{REGISTRY_BIN} is missing: apt-get install docker-registry")
        if auth not in (None, "htpasswd", "token"):
            raise ValueError(f"unknown auth mode {auth!r}")
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_dir = self.workdir / "storage"
        self.log_path = self.workdir / "registry.log"
        self.auth, self.username, self.password = auth, username, password
        self.token_server: TokenServer | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._start()

    # -- lifecycle

    def _start(self, attempts: int = 3) -> None:
        """Start, retrying on a lost race for the picked port."""
        if self.auth == "token":
            self.token_server = TokenServer(self.username, self.password)
        for attempt in range(attempts):
            self.port = _free_port()
            self.host = f"127.0.0.1:{self.port}"
            self.url = f"http://{self.host}"
            try:
                self._launch()
                return
            except RuntimeError:
                if attempt == attempts - 1 or "address already in use" not in self.log_tail():
                    self.stop()
                    raise

    def _launch(self) -> None:
        """Write the config, spawn the process and wait until /v2/ answers."""
        config_path = self.workdir / "config.yml"
        config_path.write_text(json.dumps(self._config(), indent=2))  # JSON is valid YAML
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(
                [str(REGISTRY_BIN), "serve", str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready()

    def _config(self) -> dict[str, Any]:
        """distribution 0.1 config: filesystem storage, deletes on, quiet logs, our auth."""
        config: dict[str, Any] = {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.storage_dir)},
                "delete": {"enabled": True},
            },
            "http": {"addr": self.host, "secret": "vmctl-test-http-secret"},
        }
        if self.auth == "htpasswd":
            path = self.workdir / "htpasswd"
            path.write_text(htpasswd_line(self.username, self.password))
            config["auth"] = {"htpasswd": {"realm": "vmctl-test", "path": str(path)}}
        elif self.auth == "token":
            config["auth"] = {"token": self._token_config()}
        return config

    def _token_config(self) -> dict[str, str]:
        assert self.token_server is not None
        bundle = self.workdir / "token-cert.pem"
        bundle.write_bytes(self.token_server.cert_pem())
        return {
            "realm": self.token_server.realm,
            "service": SERVICE,
            "issuer": ISSUER,
            "rootcertbundle": str(bundle),
        }

    def _wait_ready(self) -> None:
        """Poll GET /v2/ (200 or 401 both mean serving) for up to START_TIMEOUT seconds."""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"docker-registry exited ({self._proc.returncode}):\n{self.log_tail()}"
                )
            try:
                if requests.get(f"{self.url}/v2/", timeout=1).status_code in (200, 401):
                    return
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"docker-registry not ready in {START_TIMEOUT}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 30) -> str:
        """The end of the registry's log, for failure messages."""
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        """Terminate the registry (and token server); idempotent."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        if self.token_server is not None:
            self.token_server.stop()
            self.token_server = None

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- helpers for tests

    @property
    def token_requests(self) -> int:
        """How many times the token endpoint was hit (0 outside token mode)."""
        return self.token_server.requests if self.token_server else 0

    def client(self, authenticated: bool = True) -> RegistryClient:
        """A RegistryClient for this registry, with our credentials unless told otherwise."""
        if authenticated and self.auth is not None:
            return RegistryClient(self.url, self.username, self.password)
        return RegistryClient(self.url)

    def blob_path(self, digest: str) -> Path:
        """Where the filesystem driver keeps a blob's bytes, so tests can corrupt them."""
        algo, _, hex_ = digest.partition(":")
        blobs = self.storage_dir / "docker/registry/v2/blobs"
        return blobs / algo / hex_[:2] / hex_ / "data"
