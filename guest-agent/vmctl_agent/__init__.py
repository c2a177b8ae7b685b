"""vmctl's guest agent: the container engine that runs inside the Linux VM.

Standard library only: it runs on the guest's Debian python3 (3.11) and is deployed as one zipapp.
"""

__version__ = "0.1.0"
