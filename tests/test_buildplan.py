"""Stage, ARG and ENV resolution by Docker's rules."""

import pytest

from lamina.builder.dockerfile import DockerfileError, parse
from lamina.builder.plan import plan, platform_args


def _plan(text, **kwargs):
    return plan(parse(text), **kwargs)


def _by_cmd(stage, cmd):
    return [i for i in stage.instructions if i.cmd == cmd]


def test_global_arg_in_from_only_after_redeclaration():
    (stage,) = _plan(
        "ARG TAG=1.0\nARG IMG=busybox\nFROM $IMG:${TAG}\n"
        "RUN echo $TAG\nLABEL before=${TAG}\nARG TAG\nLABEL after=${TAG}\n"
    )
    assert stage.base == "busybox:1.0"
    before, after = _by_cmd(stage, "label")
    assert before.args == ["before", ""]
    assert after.args == ["after", "1.0"]
    run = _by_cmd(stage, "run")[0]
    assert "TAG" not in run.env


def test_build_arg_overrides_defaults_global_and_stage():
    (stage,) = _plan(
        "ARG V=global\nFROM img:$V\nARG V\nARG W=stage\nENV X=$V-$W\n",
        build_args={"V": "cli", "W": "cli2", "UNUSED": "1"},
    )
    assert stage.base == "img:cli"
    assert _by_cmd(stage, "env")[0].args == ["X", "cli-cli2"]
    assert "UNUSED" not in stage.instructions[-1].env


def test_arg_scope_ends_with_stage():
    first, second = _plan("FROM a AS one\nARG X=1\nRUN a\nFROM b\nRUN b\nCOPY --from=one /x /y\n")
    assert first.instructions[-1].env == {"X": "1"}
    assert second.instructions[0].env == {}


def test_env_wins_over_arg_regardless_of_order():
    (stage,) = _plan("FROM a\nENV A=env\nARG A=arg\nARG B=arg\nENV B=env2\nWORKDIR /$A/$B\nRUN x\n")
    assert _by_cmd(stage, "workdir")[0].args == ["/env/env2"]
    assert _by_cmd(stage, "run")[0].env == {"A": "env", "B": "env2"}


def test_env_uses_values_from_before_the_instruction():
    (stage,) = _plan("FROM a\nENV abc=hello\nENV abc=bye def=$abc\nENV ghi=$abc\n")
    assert stage.instructions[1].args == ["abc", "bye", "def", "hello"]
    assert stage.instructions[2].args == ["ghi", "bye"]


def test_legacy_env_and_quotes():
    (stage,) = _plan(
        'FROM a\nENV A one two\nENV B="x y" C=z\\ w\nLABEL "k 1"="v 1"\nENV L "x y" C=z\\ w\n'
    )
    assert stage.instructions[0].args == ["A", "one two"]
    assert stage.instructions[1].args == ["B", "x y", "C", "z w"]
    # The legacy form's value is the rest of the line, quotes and escapes then processed.
    assert stage.instructions[3].args == ["L", "x y C=z w"]
    assert stage.instructions[2].args == ["k 1", "v 1"]


def test_run_cmd_entrypoint_not_substituted():
    (stage,) = _plan(
        "FROM a\nENV X=1\nRUN echo $X ${X}\nCMD echo $X\nENTRYPOINT [\"echo\", \"$X\"]\n"
        "ONBUILD COPY $X /\nHEALTHCHECK CMD echo $X\n"
    )
    run, cmd, entrypoint, onbuild, health = stage.instructions[1:]
    assert run.args == ["echo $X ${X}"]
    assert cmd.args == ["echo $X"]
    assert entrypoint.args == ["echo", "$X"] and entrypoint.json
    assert onbuild.args == ["COPY $X /"]
    assert health.args == ["CMD", "echo $X"]


def test_substituted_instructions():
    (stage,) = _plan(
        "FROM a\nARG P=8080\nARG U=me\nARG D=/data\n"
        "EXPOSE $P 9000/udp\nUSER ${U}:${U}\nVOLUME $D [\"x\"]\nVOLUME [\"$D\"]\n"
        "STOPSIGNAL SIG${U}\nCOPY --chown=$U:$U --chmod=755 src$P $D/\n"
        "ADD [\"$D\", \"/y\"]\nRUN --mount=type=cache,target=$D make\n"
    )
    instructions = {i.line: i for i in stage.instructions}
    assert instructions[5].args == ["8080", "9000/udp"]
    assert instructions[6].args == ["me:me"]
    assert instructions[8].args == ["/data"]
    assert instructions[9].args == ["SIGme"]
    assert instructions[10].args == ["src8080", "/data/"]
    assert instructions[10].flags == {"chown": "me:me", "chmod": "755"}
    assert instructions[11].args == ["/data", "/y"]
    assert instructions[12].flags == {"mount": ["type=cache,target=/data"]}
    assert instructions[12].args == ["make"]


def test_predefined_args():
    (stage,) = _plan(
        "FROM --platform=$BUILDPLATFORM a:$TARGETARCH\nRUN x\nARG TARGETOS\nRUN y\n",
        build_args={"HTTP_PROXY": "http://p:3128", "FOO": "bar"},
    )
    auto = platform_args()
    assert stage.platform == auto["BUILDPLATFORM"]
    assert stage.base == "a:" + auto["TARGETARCH"]
    first, second = _by_cmd(stage, "run")
    assert first.env == {"HTTP_PROXY": "http://p:3128"}
    assert second.env == {"HTTP_PROXY": "http://p:3128", "TARGETOS": "linux"}


def test_platform_args_values():
    assert platform_args("x86_64") == {
        "BUILDPLATFORM": "linux/amd64", "BUILDOS": "linux", "BUILDARCH": "amd64",
        "BUILDVARIANT": "", "TARGETPLATFORM": "linux/amd64", "TARGETOS": "linux",
        "TARGETARCH": "amd64", "TARGETVARIANT": "",
    }


MULTI = """\
FROM golang AS Builder
ENV GOFLAGS=-mod=vendor
RUN go build
FROM builder AS tester
RUN go test
FROM alpine AS unused
RUN false
FROM debian AS assets
RUN make assets
FROM scratch
COPY --from=builder /out /app
COPY --from=3 /assets /assets
COPY --from=nginx:latest /etc/nginx /etc/nginx
"""


def test_multi_stage_dependencies():
    stages = _plan(MULTI)
    assert [(s.index, s.name) for s in stages] == [(0, "builder"), (3, "assets"), (4, None)]
    final = stages[-1]
    assert final.base == "scratch"
    assert [i.from_stage for i in final.instructions] == [0, 3, None]
    assert final.instructions[2].flags == {"from": "nginx:latest"}


def test_target_and_base_stage_env_inheritance():
    stages = _plan(MULTI, target="TESTER")
    assert [s.name for s in stages] == ["builder", "tester"]
    tester = stages[1]
    assert (tester.base, tester.base_stage) == ("builder", 0)
    assert tester.instructions[0].env == {"GOFLAGS": "-mod=vendor"}


def test_unknown_target():
    with pytest.raises(DockerfileError, match="could not be found"):
        _plan(MULTI, target="nope")


def test_base_env_callback():
    (stage,) = _plan("FROM img\nWORKDIR $HOME/x\n", base_env=lambda ref: {"HOME": "/root"})
    assert stage.instructions[0].args == ["/root/x"]
    assert stage.instructions[0].env == {"HOME": "/root"}


def test_copy_from_future_index_and_self():
    with pytest.raises(DockerfileError):
        _plan("FROM a\nCOPY --from=0 /x /y\n")
    with pytest.raises(DockerfileError, match="circular"):
        _plan("FROM a AS x\nCOPY --from=x /x /y\n")


def test_blank_base_and_bad_substitution():
    with pytest.raises(DockerfileError, match="blank"):
        _plan("ARG B\nFROM $B\n")
    with pytest.raises(DockerfileError) as info:
        _plan("FROM a\n\nENV x=${y\n")
    assert info.value.line == 3


def test_heredocs_chomped_and_expanded_for_copy_not_run():
    (stage,) = _plan(
        "FROM a\nARG N=world\n"
        "COPY <<-EOF /greeting\n\thello $N \"q\"\n\tEOF\n"
        "COPY <<'EOF' /raw\n$N\nEOF\n"
        "RUN <<EOF\necho $N\nEOF\n"
    )
    expanded, raw, run = stage.instructions[1:]
    assert expanded.args == ["<<-EOF", "/greeting"]
    assert expanded.heredocs[0].content == 'hello world "q"\n'
    assert raw.heredocs[0].content == "$N\n"
    assert run.heredocs[0].content == "echo $N\n"


def test_unused_stages_are_not_resolved():
    stages = _plan("FROM a AS broken\nENV x=${\nFROM b\n")
    assert [s.index for s in stages] == [1]
