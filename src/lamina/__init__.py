"""lamina: a daemonless container image and storage engine.

``lamina.Engine`` is the one facade; everything the ``lamina`` command does, it does.
"""

__version__ = "0.1.0"
__all__ = ["Engine", "LaminaError"]

from .errors import LaminaError


def __getattr__(name):  # keep `import lamina` (and the CLI's start-up) light
    if name == "Engine":
        from .engine import Engine

        return Engine
    raise AttributeError(name)
