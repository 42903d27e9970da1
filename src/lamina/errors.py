"""Classified errors. Every user-facing failure is a LaminaError with a one-line message.

The CLI prints ``str(error)`` to stderr and exits with ``error.exit_code``; tests assert the class.
"""


class LaminaError(Exception):
    """Base class of every error lamina reports to a user."""

    exit_code = 1


class NotFound(LaminaError):
    """A named object (image, container, layer, blob, snapshot) does not exist."""


class AlreadyExists(LaminaError):
    """An object with that name or key exists already."""


class FailedPrecondition(LaminaError):
    """The object is in a state that forbids the operation (e.g. image in use)."""


class InvalidArgument(LaminaError):
    """The input is malformed: bad reference, bad tar, bad option."""



class Unavailable(LaminaError):
    """A facility is missing on this machine (overlayfs, a runtime, privileges)."""
