"""How long ago, in the words `docker ps` and `docker images` print: the Go units library's
HumanDuration, which the CLI shows as the engine wrote it ("Up About an hour",
"Exited (0) 3 weeks ago"); and for how long such a text reads the same, so a list answer can be
given again until then."""

from __future__ import annotations

HOUR = 3600.0


def human_duration(seconds: float) -> tuple[str, float]:
    """The text for `seconds` and how many more seconds it holds (a clock gone back reads as
    "Less than a second")."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second", 1 - max(seconds, 0.0)
    if whole < 60:
        return ("1 second" if whole == 1 else f"{whole} seconds"), whole + 1 - seconds
    minutes = whole // 60
    if minutes < 60:
        text = "About a minute" if minutes == 1 else f"{minutes} minutes"
        return text, (minutes + 1) * 60 - seconds
    hours = int(seconds / HOUR + 0.5)  # Go rounds the hours, and only the hours
    return _in_hours(seconds, hours), (hours + 0.5) * HOUR - seconds


def _in_hours(seconds: float, hours: int) -> str:
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / HOUR) // 24 // 365} years"
