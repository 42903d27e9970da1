"""Frozen records: what lamina's small value classes (RunConfig, Reference, User, RestartPolicy)
took from ``dataclasses``, without importing it.

``dataclasses`` imports ``inspect`` (and with it ``ast``, ``dis``, ``tokenize``): 10-30 ms on
this kind of machine, paid by every command that reads a container's run options (``inspect``,
``rm``, ``start``, ``stop``), against Docker's whole ``inspect`` of some 70 ms. A record needs
little of it: fields from the class's annotations, in order, with their defaults; keyword or
positional construction; no assignment afterwards; equality, hashing and a repr by value.
"""

from __future__ import annotations


class FrozenInstanceError(AttributeError):
    """An assignment to a field of a frozen record (``dataclasses`` raises its own of this name)."""


def frozen(cls):
    """Make ``cls`` a frozen record of its annotated fields (in order, defaults from the class
    body); ``cls.FIELDS`` names them."""
    names = tuple(cls.__annotations__)  # the class's own: records do not inherit fields
    defaults = {name: cls.__dict__[name] for name in names if name in cls.__dict__}

    def __init__(self, *args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{cls.__name__}() takes {len(names)} positional arguments")
        values = dict(zip(names, args))
        for key, value in kwargs.items():
            if key not in names:
                raise TypeError(f"{cls.__name__}() got an unexpected keyword argument {key!r}")
            if key in values:
                raise TypeError(f"{cls.__name__}() got multiple values for argument {key!r}")
            values[key] = value
        for name in names:
            if name not in values:
                if name not in defaults:
                    raise TypeError(f"{cls.__name__}() missing required argument: {name!r}")
                values[name] = defaults[name]
            object.__setattr__(self, name, values[name])
        post_init = getattr(self, "__post_init__", None)
        if post_init is not None:
            post_init()

    def __setattr__(self, name, value):
        raise FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name):
        raise FrozenInstanceError(f"cannot delete field {name!r}")

    def values(self) -> tuple:
        return tuple(getattr(self, name) for name in names)

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return values(self) == values(other)

    def __hash__(self):
        return hash(values(self))

    def __repr__(self):
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{cls.__qualname__}({fields})"

    for name, function in (("__init__", __init__), ("__setattr__", __setattr__),
                           ("__delattr__", __delattr__), ("__eq__", __eq__),
                           ("__hash__", __hash__), ("__repr__", __repr__)):
        if name != "__repr__" or "__repr__" not in cls.__dict__:
            function.__qualname__ = f"{cls.__qualname__}.{name}"
            setattr(cls, name, function)
    cls.FIELDS = names
    return cls


def as_dict(record) -> dict:
    """The record's fields and values (values as they are: tuples stay tuples)."""
    return {name: getattr(record, name) for name in record.FIELDS}
