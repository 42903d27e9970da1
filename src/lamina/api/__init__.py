"""``lamina serve``: the Docker Engine API over the store the CLI uses.

:mod:`lamina.api.server` is the HTTP side (sockets, routing, chunked and hijacked streams); the
handlers, one module a kind of object, call the same typed stores and runtime as the CLI:
:mod:`~lamina.api.system` (ping, version, info, df, auth), :mod:`~lamina.api.containers`,
:mod:`~lamina.api.execs`, :mod:`~lamina.api.images` (with build, pull, push, save, load),
:mod:`~lamina.api.volumes`, :mod:`~lamina.api.networks` and :mod:`~lamina.api.events`.
"""
