"""POST /auth: `docker login`. The credentials are checked against the registry (its /v2/
asked with them, a token fetched where it hands out tokens), and nothing is stored here: the
docker CLI keeps them and sends them with each pull."""

from __future__ import annotations

from vmctl_agent.api.http import ApiError, Response, json_response
from vmctl_agent.store.auth import Credentials
from vmctl_agent.store.registry import RegistryClient, RegistryConfig

_HUB = ("index.docker.io", "registry-1.docker.io", "docker.io")


def login(engine, request) -> Response:
    body = request.json()
    username, password = body.get("username") or "", body.get("password") or ""
    if body.get("identitytoken") and not password:
        raise ApiError(
            400, "identity tokens are not supported by this engine: log in with a password"
        )
    if not username or not password:
        raise ApiError(400, "a username and a password are required")
    domain = registry_domain(body.get("serveraddress") or "")
    credentials = Credentials(username, password)
    client = RegistryClient(RegistryConfig.of(engine.config), credentials=lambda host: credentials)
    client.login(domain)
    return json_response({"Status": "Login Succeeded", "IdentityToken": ""})


def registry_domain(address: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `http://127.0.0.1:5000/` -> its host."""
    host = address.split("://", 1)[-1].split("/", 1)[0].lower()
    return "docker.io" if not host or host in _HUB else host
