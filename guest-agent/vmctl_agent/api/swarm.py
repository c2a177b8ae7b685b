"""Swarm mode, which this engine does not have: answered as dockerd answers on a node that is
not in a swarm (503), so clients that tidy up with `swarm leave --force` carry on."""

from __future__ import annotations

from vmctl_agent.api.http import ApiError, Response

NOT_A_MANAGER = (
    'This node is not a swarm manager. Use "docker swarm init" or "docker swarm join" to '
    "connect this node to swarm and try again."
)


def leave(engine, request) -> Response:
    raise ApiError(503, "This node is not part of a swarm")


def not_a_manager(engine, request, **_) -> Response:
    raise ApiError(503, NOT_A_MANAGER)


def unsupported(engine, request) -> Response:
    raise ApiError(400, "swarm mode is not supported by this engine")
