"""From parsed instructions to build stages: ARG and ENV resolution by Docker's rules (pure).

:func:`plan` decides everything that does not need the file system or an image store:

- ARGs before the first FROM are global: usable in FROM lines, and inside a stage only once it
  re-declares them (``ARG NAME`` without a value then takes the global value).
- ``build_args`` override ARG defaults; an ARG that is never declared is not visible, except the
  predefined proxy ARGs (``HTTP_PROXY``... reach RUN's environment undeclared) and the automatic
  platform ARGs (``TARGETPLATFORM``, ``BUILDARCH``...: global, like a declared global ARG).
- ENV wins over an ARG of the same name, whatever their order. A stage starts with the ENV of its
  base: the base stage's final ENV, or what ``base_env(image)`` says for an image.
- Substitution happens where Docker performs it (ADD, COPY, ENV, EXPOSE, FROM, LABEL, STOPSIGNAL,
  USER, VOLUME, WORKDIR, ARG defaults, and flags such as ``--from``, ``--chown``, ``--mount``),
  never in RUN, CMD, ENTRYPOINT, SHELL, HEALTHCHECK or ONBUILD text: the shell, at run time, or the
  image that uses the trigger expands those.
- Only the stages the target needs are returned (through FROM and ``COPY --from``/``RUN
  --mount=from=``), in Dockerfile order.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from lamina.builder.dockerfile import (
    Dockerfile,
    DockerfileError,
    Heredoc,
    Instruction,
    check_instruction,
    parse,
    parse_flags,
)
from lamina.builder.shellwords import Lexer, ShellWordError, expand, expand_words

__all__ = ["PROXY_ARGS", "ResolvedInstruction", "Stage", "plan", "platform_args"]

PROXY_ARGS = (
    "HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
    "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy",
)

_ARCHITECTURES = {
    "x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
    "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i686": ("386", ""), "i386": ("386", ""), "ppc64le": ("ppc64le", ""),
    "s390x": ("s390x", ""), "riscv64": ("riscv64", ""),
}


def platform_args(machine: str | None = None) -> dict[str, str]:
    """The automatic platform ARGs for a native build on this machine (linux/amd64 here)."""
    arch, variant = _ARCHITECTURES.get(machine or os.uname().machine, ("amd64", ""))
    platform = f"linux/{arch}" + (f"/{variant}" if variant else "")
    values = {}
    for prefix in ("BUILD", "TARGET"):
        values.update({
            f"{prefix}PLATFORM": platform, f"{prefix}OS": "linux",
            f"{prefix}ARCH": arch, f"{prefix}VARIANT": variant,
        })
    return values


@dataclass(frozen=True)
class ResolvedInstruction:
    """An instruction with Docker's substitutions applied.

    ``args``: ENV and LABEL as ``[key, value, key, value...]``; ARG as ``name=value`` (or
    ``name`` when it has no value); ONBUILD as the trigger's text; RUN, CMD, ENTRYPOINT, SHELL and
    HEALTHCHECK as written. ``flags`` by name (repeatable ones, ``mount`` and ``exclude``, are
    lists). ``heredocs`` have tabs chomped and, for COPY and ADD with an unquoted delimiter,
    variables expanded. ``env`` is what a RUN here sees: ARGs in scope overlaid by ENV.
    ``from_stage``: index of the stage ``COPY --from`` names, if it names a stage.
    """

    cmd: str
    args: list[str]
    flags: dict[str, str | list[str]]
    json: bool
    heredocs: list[Heredoc]
    env: dict[str, str]
    line: int
    original: str
    end_line: int = 0
    from_stage: int | None = None
    mount_stages: dict[str, int] = field(default_factory=dict)  # RUN --mount from=: stage index


@dataclass(frozen=True)
class Stage:
    """One FROM and its instructions. ``base`` is the expanded image reference, ``scratch`` or,
    when ``base_stage`` is set, the name of that earlier stage."""

    name: str | None
    index: int
    base: str
    platform: str | None
    instructions: list[ResolvedInstruction]
    base_stage: int | None = None
    line: int = 0
    env: dict[str, str] = field(default_factory=dict)  # the ENV at the end of the stage


@dataclass
class _RawStage:
    node: Instruction
    body: list[Instruction]
    name: str | None


class _Planner:
    def __init__(
        self,
        df: Dockerfile,
        build_args: Mapping[str, str],
        base_env: Callable[[str], Mapping[str, str]] | None,
    ) -> None:
        self.escape = df.escape
        self.build_args = dict(build_args)
        self.base_env = base_env
        self.auto = platform_args()
        self.global_args: dict[str, str | None] = {}
        self.raw: list[_RawStage] = []
        self.done: dict[int, Stage] = {}
        self.deps: dict[int, set[int]] = {}
        self.in_progress: set[int] = set()
        self._split(df)

    # -- structure -------------------------------------------------------------------------
    def _split(self, df: Dockerfile) -> None:
        names: dict[str, int] = {}
        for node in df.instructions:
            if node.cmd == "from":
                name = node.args[2].lower() if len(node.args) == 3 else None
                if name is not None:
                    if name in names:
                        raise DockerfileError(node.start_line, f"duplicate stage name {name!r}")
                    names[name] = len(self.raw)
                self.raw.append(_RawStage(node, [], name))
            elif self.raw:
                self.raw[-1].body.append(node)
            elif node.cmd == "arg":
                self._declare_global(node)
            else:
                raise DockerfileError(node.start_line, "no build stage in current context")
        if not self.raw:
            raise DockerfileError(df.instructions[-1].end_line,
                                  "dockerfile contains no stages to build")
        self.names = names

    def _global_scope(self) -> dict[str, str]:
        scope = dict(self.auto)
        scope.update({k: v for k, v in self.global_args.items() if v is not None})
        return scope

    def _declare_global(self, node: Instruction) -> None:
        for word in node.args:
            name, has_default, default = word.partition("=")
            value = self._expand(default, self._global_scope(), node) if has_default else None
            if name in self.build_args:
                value = self.build_args[name]
            self.global_args[name] = value

    def _expand(self, word: str, scope: Mapping[str, str], node: Instruction) -> str:
        try:
            return expand(word, scope, self.escape)
        except ShellWordError as error:
            raise DockerfileError(node.start_line, str(error)) from None

    def _expand_words(self, word: str, scope: Mapping[str, str], node: Instruction) -> list[str]:
        try:
            return expand_words(word, scope, self.escape)
        except ShellWordError as error:
            raise DockerfileError(node.start_line, str(error)) from None

    def stage_index(self, reference: str, current: int, node: Instruction) -> int | None:
        """The stage *reference* (a name or, for ``--from``, an index) points at, if any."""
        lowered = reference.lower()
        if lowered in self.names:
            index = self.names[lowered]
            if index == current:
                raise DockerfileError(
                    node.start_line, f"circular dependency detected on stage: {lowered}"
                )
            return index
        if reference.isdigit():
            index = int(reference)
            if index >= current:
                raise DockerfileError(
                    node.start_line, f"invalid from flag value {reference}: refers to current "
                                     "or future build stage"
                )
            return index
        return None

    # -- resolution ------------------------------------------------------------------------
    def resolve(self, index: int) -> Stage:
        if index in self.done:
            return self.done[index]
        raw = self.raw[index]
        if index in self.in_progress:
            raise DockerfileError(raw.node.start_line,
                                  f"circular dependency detected on stage: {raw.name or index}")
        self.in_progress.add(index)
        stage = self._resolve(index, raw)
        self.in_progress.discard(index)
        self.done[index] = stage
        for dependency in self.deps[index]:
            self.resolve(dependency)
        return stage

    def _resolve(self, index: int, raw: _RawStage) -> Stage:
        node = raw.node
        flags = parse_flags(node)
        scope = self._global_scope()
        if len(node.args) not in (1, 3):
            raise DockerfileError(node.start_line, "FROM requires either one or three arguments")
        base = self._expand(node.args[0], scope, node)
        if not base:
            raise DockerfileError(
                node.start_line, f"base name ({node.args[0]}) should not be blank"
            )
        platform = flags.get("platform")
        if isinstance(platform, str):
            platform = self._expand(platform, scope, node)
        deps: set[int] = set()
        base_stage = None
        lowered = base.lower()
        if lowered in self.names and self.names[lowered] < index:
            base_stage = self.names[lowered]
            base = lowered
            deps.add(base_stage)
            env = dict(self.resolve(base_stage).env)
        elif lowered == "scratch" or self.base_env is None:
            env = {}
        else:
            env = dict(self.base_env(base))
        args: dict[str, str] = {}
        resolved = [self._instruction(child, index, args, env, deps) for child in raw.body]
        self.deps[index] = deps
        return Stage(raw.name, index, base, platform, resolved, base_stage,
                     node.start_line, dict(env))

    def _run_env(self, args: Mapping[str, str], env: Mapping[str, str]) -> dict[str, str]:
        visible = {k: v for k, v in self.build_args.items() if k in PROXY_ARGS}
        visible.update(args)
        visible.update(env)
        return visible

    def _instruction(
        self,
        node: Instruction,
        index: int,
        args: dict[str, str],
        env: dict[str, str],
        deps: set[int],
    ) -> ResolvedInstruction:
        cmd = node.cmd
        check_instruction(node)  # the argument counts and flags (Docker's one-line errors)
        scope = {**args, **env}
        flags = parse_flags(node)
        words = list(node.args)
        heredocs = [_chomped(h) for h in node.heredocs]
        from_stage = None
        mount_stages: dict[str, int] = {}
        if cmd == "arg":
            words = []
            for word in node.args:
                name, has_default, default = word.partition("=")
                value: str | None
                if name in self.build_args:
                    value = self.build_args[name]
                elif has_default:
                    value = self._expand(default, scope, node)
                elif self.global_args.get(name) is not None:
                    value = self.global_args[name]
                else:
                    value = self.auto.get(name)
                if value is None:
                    args.pop(name, None)
                    words.append(name)
                else:
                    args[name] = value
                    words.append(f"{name}={value}")
        elif cmd in ("env", "label"):
            words = []
            for key, value in zip(node.args[0::3], node.args[1::3]):
                words += [self._expand(key, scope, node), self._expand(value, scope, node)]
            if cmd == "env":
                env.update(zip(words[0::2], words[1::2]))
        elif cmd in ("add", "copy"):
            names = {h.name for h in node.heredocs}
            words = [w if _heredoc_word(w, names) else self._expand(w, scope, node) for w in words]
            flags = self._expand_flags(flags, scope, node)
            reference = flags.get("from")
            if isinstance(reference, str) and reference:
                from_stage = self.stage_index(reference, index, node)
                if from_stage is not None:
                    deps.add(from_stage)
            heredocs = [self._expand_heredoc(h, scope, node) if h.expand else h
                        for h in heredocs]
        elif cmd == "run":
            flags = self._expand_flags(flags, scope, node)
            for mount in flags.get("mount", []):
                reference = _mount_from(mount)
                if reference:
                    stage = self.stage_index(reference, index, node)
                    if stage is not None:
                        deps.add(stage)
                        mount_stages[reference] = stage
        elif cmd == "expose":
            words = [port for word in words for port in self._expand_words(word, scope, node)]
        elif cmd in ("volume", "user", "workdir", "stopsignal"):
            words = [self._expand(word, scope, node) for word in words]
        return ResolvedInstruction(
            cmd=cmd, args=words, flags=flags, json=node.json, heredocs=heredocs,
            env=self._run_env(args, env), line=node.start_line, original=node.original,
            end_line=node.end_line, from_stage=from_stage, mount_stages=mount_stages,
        )

    def _expand_flags(self, flags: dict, scope: Mapping[str, str], node: Instruction) -> dict:
        out: dict[str, str | list[str]] = {}
        for name, value in flags.items():
            if isinstance(value, list):
                out[name] = [self._expand(item, scope, node) for item in value]
            else:
                out[name] = self._expand(value, scope, node)
        return out

    def _expand_heredoc(self, heredoc: Heredoc, scope: Mapping[str, str],
                        node: Instruction) -> Heredoc:
        lexer = Lexer(scope, self.escape, process_quotes=False)
        try:
            content = lexer.run(heredoc.content)[0]
        except ShellWordError as error:
            raise DockerfileError(node.start_line, str(error)) from None
        return Heredoc(heredoc.name, content, heredoc.expand, heredoc.chomp,
                       heredoc.file_descriptor)


def _chomped(heredoc: Heredoc) -> Heredoc:
    if not heredoc.chomp:
        return heredoc
    content = "".join(line.lstrip("\t") for line in heredoc.content.splitlines(keepends=True))
    return Heredoc(heredoc.name, content, heredoc.expand, heredoc.chomp, heredoc.file_descriptor)


def _heredoc_word(word: str, names: set[str]) -> bool:
    if not names or "<<" not in word:
        return False
    body = word.split("<<", 1)[1].lstrip("-").strip("'\"")
    return body in names


def _mount_from(mount: str) -> str | None:
    for field_ in mount.split(","):
        key, _, value = field_.partition("=")
        if key.strip() == "from":
            return value.strip()
    return None


def plan(
    df: Dockerfile,
    build_args: dict[str, str] | None = None,
    target: str | None = None,
    *,
    base_env: Callable[[str], Mapping[str, str]] | None = None,
) -> list[Stage]:
    """The stages needed to build *target* (default: the last stage), in Dockerfile order.

    *base_env*, if given, returns the ENV of a base image by reference, so that substitutions
    see it as Docker's do; without it image bases start with an empty ENV.
    """
    planner = _Planner(df, build_args or {}, base_env)
    if target is None:
        wanted = len(planner.raw) - 1
    elif target.lower() in planner.names:
        wanted = planner.names[target.lower()]
    else:
        raise DockerfileError(planner.raw[-1].node.start_line,
                              f"target stage {target!r} could not be found")
    planner.resolve(wanted)
    needed: set[int] = set()
    pending = [wanted]
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(planner.deps[index])
    return [planner.done[index] for index in sorted(needed)]


def check(text: str | bytes) -> None:
    """Parse and validate without building; raises :class:`DockerfileError` naming the line.

    Beyond parsing: known instructions with the right number of arguments and only the flags
    they accept, nothing but ARG before the first FROM, valid stage names, valid HEALTHCHECK
    options, and variable references and stage references that resolve.
    """
    df = parse(text)
    seen_from = False
    for node in df.instructions:
        check_instruction(node)
        if node.cmd == "from":
            seen_from = True
        elif node.cmd != "arg" and not seen_from:
            raise DockerfileError(node.start_line, "no build stage in current context")
    if not seen_from:
        raise DockerfileError(df.instructions[-1].end_line,
                              "dockerfile contains no stages to build")
    plan(df)
