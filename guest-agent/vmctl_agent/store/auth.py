"""Registry authentication: the WWW-Authenticate challenge, Bearer tokens and Basic credentials.

The flow Docker Hub uses: a 401 names a token realm, service and scope; we fetch a token there
(with Basic credentials if we have them, anonymously otherwise) and retry with `Bearer`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vmctl_agent.errors import AuthenticationError
from vmctl_agent.store.transport import Transport

_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


@dataclass(frozen=True)
class Challenge:
    scheme: str
    params: dict[str, str]


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


CredentialLookup = Callable[[str], "Credentials | None"]


def parse_challenge(header: str) -> Challenge:
    """Parse `Bearer realm="...",service="...",scope="..."` (or `Basic realm=...`)."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m[1].lower(): (m[2] if m[2] is not None else m[3]) for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def docker_config_credentials(config_dir: str | None = None) -> CredentialLookup:
    """Credentials from docker's config.json `auths` (what `docker login` writes)."""
    base = Path(config_dir or os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")
    try:
        auths = json.loads((base / "config.json").read_text()).get("auths", {})
    except (OSError, ValueError):
        auths = {}

    def lookup(host: str) -> Credentials | None:
        for key in (host, f"https://{host}", f"http://{host}", *_hub_aliases(host)):
            entry = auths.get(key) or auths.get(key + "/v1/")
            if entry and entry.get("auth"):
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
                return Credentials(user, password)
        return None

    return lookup


def _hub_aliases(host: str) -> tuple[str, ...]:
    if host in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return ("https://index.docker.io/v1/", "index.docker.io")
    return ()


class TokenCache:
    """Bearer tokens per (realm, service, scope), reused until shortly before they expire."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._tokens: dict[tuple, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def authorization(self, challenge: Challenge, scope: str, creds: Credentials | None) -> str:
        """The Authorization header value answering `challenge` for `scope`."""
        if challenge.scheme == "basic":
            if creds is None:
                raise AuthenticationError("the registry requires a login: run `docker login`")
            return creds.basic()
        if challenge.scheme != "bearer" or "realm" not in challenge.params:
            raise AuthenticationError(f"unsupported auth challenge {challenge.scheme!r}")
        key = (challenge.params["realm"], challenge.params.get("service"), scope, creds)
        with self._lock:
            cached = self._tokens.get(key)
        if cached and cached[1] > time.monotonic():
            return "Bearer " + cached[0]
        token, lifetime = self._fetch(challenge, scope, creds)
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(lifetime - 10, 1))
        return "Bearer " + token

    def _fetch(self, challenge: Challenge, scope: str, creds: Credentials | None):
        query = [("scope", one) for one in scope.split()]  # none: a login's token
        if "service" in challenge.params:
            query.append(("service", challenge.params["service"]))
        url = challenge.params["realm"] + "?" + urllib.parse.urlencode(query)
        headers = {"Authorization": creds.basic()} if creds else {}
        with self._transport.request("GET", url, headers) as response:
            body = response.read()
            if response.status in (401, 403):
                raise AuthenticationError(_denied(creds))
            if response.status != 200:
                raise AuthenticationError(
                    f"token server answered {response.status}: {body[:200]!r}"
                )
        try:
            answer = json.loads(body)
            token = answer.get("token") or answer["access_token"]
        except (ValueError, KeyError, AttributeError) as e:
            raise AuthenticationError("token server sent no token") from e
        return token, float(answer.get("expires_in") or 60)


def _denied(creds: Credentials | None) -> str:
    if creds is None:
        return "authentication required: run `docker login` for this registry"
    return f"unauthorized: the registry refused the credentials of {creds.username!r}"
