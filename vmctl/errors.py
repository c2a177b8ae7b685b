"""vmctl's one exception tree.

VmctlError            anything vmctl reports to a user, saying what to do next
"""


class VmctlError(Exception):
    """Base of every error vmctl reports to a user."""
