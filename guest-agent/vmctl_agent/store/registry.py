"""The distribution API client: endpoints (mirrors, insecure and loopback registries), auth, and
the two calls a pull needs: fetch a manifest, open a blob.

Endpoints are chosen as dockerd chooses them: docker.io goes to each `registry-mirrors` entry
first and then to the Hub; loopback registries speak plain HTTP; `insecure-registries` try HTTPS
without verification, then HTTP. One `RepositorySession` sticks to the endpoint that answered.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from vmctl_agent.config import AgentConfig
from vmctl_agent.errors import (
    AuthenticationError,
    ManifestUnknown,
    RegistryError,
    RegistryUnreachable,
    UnsupportedManifest,
    VerificationError,
)
from vmctl_agent.store import manifest as mf
from vmctl_agent.store.auth import Credentials, TokenCache, parse_challenge
from vmctl_agent.store.reference import DEFAULT_DOMAIN, Reference
from vmctl_agent.store.transport import Body, Response, Transport

HUB_URL = "https://registry-1.docker.io"
MAX_MANIFEST_BYTES = 4 << 20


@dataclass(frozen=True)
class Endpoint:
    url: str
    verify_tls: bool = True
    mirror: bool = False


@dataclass(frozen=True)
class RegistryConfig:
    """The registry keys of dockerd's daemon.json."""

    mirrors: tuple[str, ...] = ()
    insecure: tuple[str, ...] = ()

    @classmethod
    def of(cls, settings: AgentConfig) -> RegistryConfig:
        """The registry keys of the agent's configuration."""
        return cls(settings.registry_mirrors, settings.insecure_registries)

    def endpoints(self, domain: str) -> list[Endpoint]:
        """Where to look for `domain`'s repositories, in order."""
        found: list[Endpoint] = []
        if domain == DEFAULT_DOMAIN:
            for url in self.mirrors:
                host = urllib.parse.urlsplit(url).netloc
                found.append(Endpoint(url.rstrip("/"), not self.is_insecure(host), mirror=True))
            return [*found, Endpoint(HUB_URL)]
        if is_loopback(domain):
            return [Endpoint(f"http://{domain}")]
        if self.is_insecure(domain):
            return [Endpoint(f"https://{domain}", False), Endpoint(f"http://{domain}", False)]
        return [Endpoint(f"https://{domain}")]

    def is_insecure(self, host: str) -> bool:
        """True for loopback hosts and those listed (as host[:port] or a CIDR) in insecure."""
        if is_loopback(host):
            return True
        address = _address(host)
        for entry in self.insecure:
            if entry == host or entry == _strip_port(host):
                return True
            if address is not None and "/" in entry and _in_network(address, entry):
                return True
        return False


def is_loopback(host: str) -> bool:
    """Loopback registries are plain HTTP, as dockerd treats them."""
    name = _strip_port(host)
    if name == "localhost":
        return True
    address = _address(host)
    return address is not None and address.is_loopback


def _strip_port(host: str) -> str:
    if host.startswith("["):
        return host[1 : host.index("]")]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _address(host: str):
    try:
        return ipaddress.ip_address(_strip_port(host))
    except ValueError:
        return None


def _in_network(address, cidr: str) -> bool:
    try:
        return address in ipaddress.ip_network(cidr, strict=False)
    except ValueError:
        return False


@dataclass
class RepositorySession:
    """One repository on one endpoint, with the authorization that endpoint asked for."""

    client: RegistryClient
    endpoint: Endpoint
    reference: Reference
    authorization: str | None = None
    scope: str = ""  # the token's scopes (a push's: pull,push here, pull where it mounts from)

    def __post_init__(self) -> None:
        self.scope = self.scope or f"repository:{self.remote_path}:pull"

    @property
    def remote_path(self) -> str:
        return self.reference.path

    def get(self, path: str, accept: str | None = None) -> Response:
        """GET `/v2/<repo>/<path>`, answering one auth challenge if the registry asks."""
        return self.request("GET", path, {"Accept": accept} if accept else {})

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: Body = None
    ) -> Response:
        """`method` on `/v2/<repo>/<path>` (or on a URL the registry gave, such as an upload's
        Location), answering one auth challenge if the registry asks."""
        url = urllib.parse.urljoin(f"{self.endpoint.url}/v2/{self.remote_path}/", path)
        start = body.tell() if hasattr(body, "tell") else 0
        response = self._send(method, url, headers or {}, body)
        if response.status == 401:
            challenge = response.headers.get("WWW-Authenticate", "")
            response.read()
            response.close()
            self.authorization = self.client.authorize(self.reference.domain, challenge, self.scope)
            if hasattr(body, "seek"):
                body.seek(start)
            response = self._send(method, url, headers or {}, body)
        return response

    def _send(self, method: str, url: str, headers: dict[str, str], body: Body) -> Response:
        if self.authorization:
            headers = {**headers, "Authorization": self.authorization}
        return self.client.transport.request(
            method, url, headers, verify_tls=self.endpoint.verify_tls, body=body
        )

    def fetch_manifest(self, ref: str) -> mf.Fetched:
        """The manifest for a tag or digest, its digest verified."""
        if ":" in ref and not ref.startswith("sha256:"):
            raise UnsupportedManifest(f"unsupported digest algorithm in {ref!r}: use sha256")
        with self.get(f"manifests/{ref}", accept=mf.ACCEPT) as response:
            body = _read_limited(response, MAX_MANIFEST_BYTES)
            if response.status != 200:
                what = self.reference.familiar_name + ("@" if ":" in ref else ":") + ref
                raise self._error(response.status, body, f"manifest for {what}")
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
            claimed = response.headers.get("Docker-Content-Digest")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        expected = ref if ":" in ref else claimed
        if expected and expected.startswith("sha256:") and expected != digest:
            raise VerificationError(
                f"manifest digest mismatch for {self.reference.familiar_name}: "
                f"expected {expected}, got {digest}; the registry sent corrupted or altered data"
            )
        return mf.Fetched(body, mf.media_type_of(body, media_type), digest)

    def open_blob(self, digest: str) -> Response:
        """A streaming response for blob `digest` (redirects to blob storage followed)."""
        response = self.get(f"blobs/{digest}")
        if response.status != 200:
            body = _read_limited(response, 64 << 10)
            response.close()
            raise self._error(
                response.status, body, f"blob {digest} of {self.reference.familiar_name}"
            )
        return response

    def _error(self, status: int, body: bytes, what: str) -> RegistryError:
        code, message = registry_error(body)
        name = self.reference.familiar_name
        host = urllib.parse.urlsplit(self.endpoint.url).netloc
        if status == 404 and code == "NAME_UNKNOWN":
            return ManifestUnknown(f"repository {name} not found: does not exist on {host}")
        if status == 404:
            return ManifestUnknown(f"{what} not found: {message or 'unknown'}")
        if status in (401, 403):
            return AuthenticationError(
                f"pull access denied for {name}, repository does not exist or may require "
                f"'docker login': {message or 'denied'}"
            )
        return RegistryError(f"registry {host} answered {status} for {what}: {message or '?'}")


def _read_limited(response: Response, limit: int) -> bytes:
    body = response.read(limit + 1)
    if len(body) > limit:
        raise RegistryError(f"registry response larger than {limit} bytes")
    return body


def registry_error(body: bytes) -> tuple[str, str]:
    """The first `{"errors": [{"code", "message"}]}` entry of a registry error body."""
    try:
        first = json.loads(body)["errors"][0]
        return str(first.get("code", "")), str(first.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return "", body[:200].decode("utf-8", "replace").strip()


class RegistryClient:
    """Opens repository sessions, falling back across a domain's endpoints."""

    def __init__(
        self,
        config: RegistryConfig | None = None,
        transport: Transport | None = None,
        credentials: Callable[[str], Credentials | None] | None = None,
    ) -> None:
        self.config = config or RegistryConfig()
        self.transport = transport or Transport()
        self._credentials = credentials or (lambda host: None)
        self._tokens = TokenCache(self.transport)

    def authorize(self, domain: str, challenge_header: str, scope: str) -> str:
        if not challenge_header:
            raise AuthenticationError(f"registry {domain} answered 401 without a challenge")
        challenge = parse_challenge(challenge_header)
        return self._tokens.authorization(challenge, scope, self._credentials(domain))

    def login(self, domain: str) -> None:
        """`docker login`: the registry's /v2/ asked with the credentials (its challenge
        answered, then asked again); AuthenticationError if they are refused. Mirrors are
        not asked: the login is for the registry itself."""
        errors: list[Exception] = []
        for endpoint in self.config.endpoints(domain):
            if endpoint.mirror:
                continue
            try:
                return self._login_at(endpoint, domain)
            except RegistryUnreachable as e:
                if not _try_next(endpoint, e):
                    raise
                errors.append(e)
        raise errors[-1]

    def _login_at(self, endpoint: Endpoint, domain: str) -> None:
        url = f"{endpoint.url}/v2/"
        status, challenge = self._ping(url, {}, endpoint)
        if status != 401:
            return  # the registry asks for no login: dockerd says it succeeded, and so do we
        try:
            authorization = self.authorize(domain, challenge, "")
            status, _ = self._ping(url, {"Authorization": authorization}, endpoint)
        except AuthenticationError as e:
            raise AuthenticationError(f"{_REFUSED} ({e})") from e
        if status in (401, 403):
            raise AuthenticationError(_REFUSED)

    def _ping(self, url: str, headers: dict[str, str], endpoint: Endpoint) -> tuple[int, str]:
        with self.transport.request("GET", url, headers, verify_tls=endpoint.verify_tls) as r:
            r.read()
            return r.status, r.headers.get("WWW-Authenticate", "")

    def resolve(self, reference: Reference) -> tuple[RepositorySession, mf.Fetched]:
        """The first endpoint that serves `reference`'s manifest, and that manifest."""
        ref = reference.digest or reference.tag or "latest"
        errors: list[Exception] = []
        for endpoint in self.config.endpoints(reference.domain):
            session = RepositorySession(self, endpoint, reference)
            try:
                return session, session.fetch_manifest(ref)
            except (RegistryUnreachable, RegistryError) as e:
                if not _try_next(endpoint, e):
                    raise _combined(errors, e) from e
                errors.append(e)
        raise errors[-1]


_REFUSED = "unauthorized: incorrect username or password"


def _combined(earlier: list[Exception], last: Exception) -> Exception:
    """A mirror's "not found" is the answer that matters when the Hub is then unreachable
    (an offline machine): say both, as a not-found."""
    unknown = [e for e in earlier if isinstance(e, ManifestUnknown)]
    if unknown and isinstance(last, RegistryUnreachable):
        return ManifestUnknown(f"{unknown[0]} (on the registry mirror); and {last}")
    return last


def _try_next(endpoint: Endpoint, error: Exception) -> bool:
    """Mirrors fall back on any failure; HTTPS on an insecure registry falls back to HTTP."""
    if endpoint.mirror:
        return True
    return isinstance(error, RegistryUnreachable) and not endpoint.verify_tls
