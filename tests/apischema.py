"""The shapes of Docker Engine API replies, for tests: check a decoded reply against the schemas
in tests/data/api/schemas.json (API 1.44, written as lamina's own fixtures; tests/test_apischema.py
proves them against Docker Engine's real replies).

    validate("ContainerInspect", 200, json.loads(body))
    validate("ErrorResponse", 404, json.loads(body))      # any 4xx/5xx of any operation too
    events = validate_stream("SystemEvents", 200, body)   # JSON-lines bodies; returns the messages
    stat = path_stat(headers["X-Docker-Container-Path-Stat"])
    validate("ContainerArchiveInfo", 200, stat)

A reply that does not fit raises AssertionError naming the operation, the status and the JSON path
of each problem: ``ContainerInspect 200: $.State.Pid: 'x' is not of type 'integer'``.

Types are Go's, as clients decode them: ``integer`` accepts JSON integers only (1.0 and true are
not integers to Go's decoder, though JSON Schema's default checker takes 1.0).
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
from collections.abc import Iterable
from typing import Any

from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

SCHEMAS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "api", "schemas.json")
API_VERSION = "1.44"
_URI = "urn:lamina:tests:docker-api-1.44"
_MAX_REPORTED = 25


def _is_integer(checker, instance) -> bool:
    return isinstance(instance, int) and not isinstance(instance, bool)


StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine("integer", _is_integer))


@functools.cache
def document() -> dict:
    """The fixture document: ``$defs`` (shared shapes) and ``operations`` (one per operation)."""
    with open(SCHEMAS, encoding="utf-8") as f:
        doc = json.load(f)
    if doc.get("apiVersion") != API_VERSION:
        raise AssertionError(f"{SCHEMAS} describes API {doc.get('apiVersion')}, not {API_VERSION}")
    return doc


@functools.cache
def _registry() -> Registry:
    return Registry().with_resource(_URI, Resource.from_contents(document(), DRAFT202012))


@functools.cache
def validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at a JSON pointer of the document ("#/$defs/Volume")."""
    return StrictValidator({"$ref": _URI + pointer}, registry=_registry())


def operations() -> list[str]:
    return sorted(document()["operations"])


def _pointer(operation: str, status: int, stream: bool) -> str:
    ops = document()["operations"]
    if operation not in ops:
        raise AssertionError(f"no schema for operation {operation!r} in {SCHEMAS}")
    op = ops[operation]
    if status >= 400 and str(status) not in op["responses"]:
        return "#/$defs/ErrorResponse"  # every error of every operation is {"message": ...}
    if bool(op.get("stream")) != stream:
        use = "validate_stream" if op.get("stream") else "validate"
        raise AssertionError(f"{operation} {status}: check this reply with {use}()")
    for key in (str(status), "default"):
        if key in op["responses"]:
            return f"#/operations/{operation}/responses/{key}"
    raise AssertionError(f"{operation}: no schema for status {status} "
                         f"(it has {', '.join(sorted(op['responses']))})")


def _describe(error: ValidationError) -> str:
    message = error.message
    if error.context:  # anyOf/oneOf/allOf: say which branch came closest and why it failed
        closest = best_match(error.context)
        message += f" ({closest.json_path}: {closest.message})"
    return f"{error.json_path}: {message}"


def _check(pointer: str, instance: Any, what: str) -> None:
    errors = sorted(validator(pointer).iter_errors(instance), key=lambda e: list(map(str, e.path)))
    if not errors:
        return
    lines = [f"{what}: {_describe(e)}" for e in errors[:_MAX_REPORTED]]
    if len(errors) > _MAX_REPORTED:
        lines.append(f"{what}: ... and {len(errors) - _MAX_REPORTED} more")
    raise AssertionError("\n".join(lines))


def validate(operation: str, status: int, body: Any) -> None:
    """Check one decoded reply (a JSON value, the text of a text/plain reply, or None for no
    body) against the schema of ``operation`` for ``status``."""
    _check(_pointer(operation, status, stream=False), body, f"{operation} {status}")


def decode_stream(body: bytes | str) -> list:
    """The JSON values of a streamed body, in order (newline-separated or merely concatenated,
    as docker-py's json_stream accepts them)."""
    text = body.decode("utf-8") if isinstance(body, bytes) else body
    decoder = json.JSONDecoder()
    messages, position = [], 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return messages
        try:
            value, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as e:
            raise AssertionError(f"message {len(messages)} of the stream is not JSON ({e.msg}): "
                                 f"{text[position:position + 80]!r}") from None
        messages.append(value)


def validate_stream(operation: str, status: int, body: bytes | str | Iterable[Any]) -> list:
    """Check a JSON-lines reply message by message, then as a whole where the schema says what
    the whole must hold; returns the decoded messages."""
    messages = decode_stream(body) if isinstance(body, bytes | str) else list(body)
    if status >= 400:
        validate(operation, status, messages[0] if len(messages) == 1 else messages)
        return messages
    pointer = _pointer(operation, status, stream=True)
    for index, message in enumerate(messages):
        _check(pointer, message, f"{operation} {status} message {index}")
    if str(status) in document()["operations"][operation].get("whole", {}):
        _check(f"#/operations/{operation}/whole/{status}", messages, f"{operation} {status} stream")
    return messages


def path_stat(header: str | None) -> Any:
    """The decoded X-Docker-Container-Path-Stat header: JSON in standard base64, as the docker
    CLI decodes it (Go's base64.StdEncoding: no URL-safe alphabet, padding required)."""
    if not header:
        raise AssertionError("no X-Docker-Container-Path-Stat header")
    try:
        raw = base64.b64decode(header, validate=True)
    except (binascii.Error, ValueError) as e:
        raise AssertionError(f"X-Docker-Container-Path-Stat is not standard base64 ({e}): "
                             f"{header[:80]!r}") from None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise AssertionError(f"X-Docker-Container-Path-Stat is not base64 of JSON ({e}): "
                             f"{raw[:80]!r}") from None
