"""``lamina build``: Dockerfiles to images, with a build cache.

    >>> from lamina import Engine
    >>> from lamina.builder import BuildOptions, build
    >>> containers = Engine().container_store
    >>> image_id = build(containers, BuildOptions(context="app/", dockerfile=open("app/Dockerfile").read(),
    ...                                       tags=["app:1"]))

Parsing and variable rules live in :mod:`lamina.builder.dockerfile` and :mod:`lamina.builder.plan`; this
package executes the plan: :mod:`.executor` (steps, states, config and history), :mod:`.copy`
(COPY/ADD as layer tars), :mod:`.context` (the build context and .dockerignore), :mod:`.tree`
(lookups in an image's layers without mounting) and :mod:`.cache` (the step cache).
"""

from .executor import Builder, BuildError, BuildOptions, build

__all__ = ["BuildError", "BuildOptions", "Builder", "build"]
