"""Turnpike: self-hosted STUN/TURN relays, ICE-server tokens and a Media Streams gateway."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("turnpike")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
