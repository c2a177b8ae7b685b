"""The `label` filter as every dockerd list, prune and event stream reads it: each value
given must hold (`key` present, `key=value` equal), so several narrow the match. compose
finds a service's containers with two of them (project and service)."""

from __future__ import annotations


def matches(labels: dict[str, str], wanted: list[str]) -> bool:
    """Every `key` present, every `key=value` equal."""
    return all(_holds(labels, item) for item in wanted)


def _holds(labels: dict[str, str], item: str) -> bool:
    key, sep, value = item.partition("=")
    return key in labels and (not sep or labels[key] == value)
