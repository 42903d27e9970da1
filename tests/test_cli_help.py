"""``lamina --help`` and ``lamina VERB --help`` against the command table, so neither drifts.

The table is ``lamina.cli.main.VERBS`` (every verb, the subcommands of the management groups, and
the module that defines each: lazily imported ones included); each module's ``ARGS`` holds the
flags its verbs parse. The help is printed from them; these tests check that every verb of the
table is in ``lamina --help`` and nothing else is, that every module's verbs and functions are in
the table, and that ``lamina VERB --help`` of the real command exits 0 on stdout, names every flag
the verb's parser accepts, and does no work (no store is made).
"""

import os
import re
import subprocess
import sys

import pytest

from lamina.cli import common
from lamina.cli import main as cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "bin", "lamina")
MODULES = ("images", "containers", "system", "run", "build", "transfer", "cp")  # the verb modules


def _command(*args, root):
    """The real command, started as bin/lamina starts it (``python -S``)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAMINA_")}
    return [sys.executable, "-S", BIN, "--root", root, *args], env


def lamina(*args, root):
    cmd, env = _command(*args, root=root)
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)


def _listed(text: str, heading: str) -> list[str]:
    """The names a help lists under ``heading:`` (up to the next blank line)."""
    block = text.split(f"\n{heading}:\n", 1)[1].split("\n\n", 1)[0]
    return [line.split()[0] for line in block.splitlines()]


def _names_flag(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def _paths(module):
    """The verbs (as ARGS and cmd_ name them) that the table says ``module`` defines."""
    out = set()
    for name, (_, _, where) in cli.VERBS.items():
        if isinstance(where, dict):
            out |= {f"{name} {sub}" for sub, entry in where.items()
                    if isinstance(entry, tuple) and entry[1] == module}
        elif where == module:
            out.add(name)
    return out


def test_top_level_help_lists_every_verb_of_the_table(tmp_path):
    root = str(tmp_path / "store")
    proc = lamina("--help", root=root)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("Usage:  lamina [OPTIONS] COMMAND")
    listed = []
    for section in cli.SECTIONS:
        names = _listed(proc.stdout, section)
        assert names == [n for n, (s, _, _) in cli.VERBS.items() if s == section], section
        listed += names
    # every verb of the table is listed, once, and no verb the table lacks
    assert sorted(listed) == sorted(cli.VERBS)
    for name in listed:
        assert re.search(rf"^  {name} +{re.escape(cli.VERBS[name][1])}$", proc.stdout, re.M)
    # the global options: every flag main() parses, and the storage drivers lamina has
    from lamina.snapshots import DRIVERS

    options = proc.stdout.split("\nGlobal Options:\n", 1)[1]
    for flag in common.Parser("", cli.GLOBAL_ARGS).flags:
        assert _names_flag(options, flag), flag
    assert re.search(r"--driver string +Storage driver of a new store: " + ", ".join(DRIVERS),
                     options)
    # `lamina` alone prints the same
    assert lamina(root=root).stdout == proc.stdout
    assert not os.path.exists(root)


def test_every_module_verb_is_in_the_table():
    for module_name in MODULES:
        module = __import__(f"lamina.cli.{module_name}", fromlist=["ARGS"])
        paths = _paths(module_name)
        assert set(module.ARGS) == paths, module_name
        functions = {n[4:].replace("_", " ") for n in dir(module) if n.startswith("cmd_")}
        assert functions == paths, module_name


def test_every_invocation_resolves_to_a_verb():
    table = set()
    for name, (_, _, where) in cli.VERBS.items():
        if isinstance(where, dict):
            for sub, entry in where.items():
                table.add(f"{name} {sub}")
                target = entry if isinstance(entry, str) else f"{name} {sub}"
                # an other name names a verb of the table, itself not another name
                assert cli.canonical(target) == target and target in cli.invocations()
        else:
            table.add(name)
    assert set(cli.invocations()) == table


@pytest.mark.parametrize("invocation", cli.invocations())
def test_verb_help_names_every_flag(invocation):
    """In process, for every verb under every name: the help shows the usage (each positional)
    and every flag the verb's parser accepts."""
    parser = cli.verb_parser(invocation)
    text = parser.help()
    assert text.startswith(f"Usage:  lamina {invocation}")
    usage = text.splitlines()[0]
    for names, _, label, *_ in parser.arguments:
        if not names.startswith("-"):
            assert f" {label}" in usage, names
    assert parser.flags or "Options:" not in text
    for flag in parser.flags:
        assert _names_flag(text.split("\nOptions:\n", 1)[1], flag), (invocation, flag)
    # the other names it has are the table's
    others = {i for i in cli.invocations() if cli.canonical(i) == cli.canonical(invocation)}
    for other in others - {invocation}:
        assert f"lamina {other}" in text


def test_real_command_help_for_every_verb(tmp_path):
    """``lamina VERB --help`` (and ``-h``; and ``lamina GROUP --help``) of the real command, for
    every invocation: exit 0, the help on stdout, nothing on stderr, no store made. All run at
    once, so this stays quick."""
    root = str(tmp_path / "store")
    runs = {}
    for invocation in cli.invocations():
        runs[invocation] = [*invocation.split(), "--help"]
    for name, (_, _, where) in cli.VERBS.items():
        if isinstance(where, dict):
            runs[f"{name} (group)"] = [name, "--help"]
    runs["ps -h"] = ["ps", "-h"]
    runs["create (after its flags)"] = ["create", "--name", "x", "--help"]
    procs = {}
    for key, args in runs.items():
        cmd, env = _command(*args, root=root)
        procs[key] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env)
    outs = {key: (p.communicate(), p.returncode) for key, p in procs.items()}
    for key, ((out, err), code) in outs.items():
        assert (code, err) == (0, ""), key
        assert out.startswith("Usage:  lamina "), key
    for invocation in cli.invocations():
        assert outs[invocation][0][0] == cli.verb_parser(invocation).help() + "\n", invocation
        for flag in cli.verb_parser(invocation).flags:
            assert _names_flag(outs[invocation][0][0], flag), (invocation, flag)
    assert outs["ps -h"][0][0] == outs["ps"][0][0]
    assert outs["create (after its flags)"][0][0] == outs["create"][0][0]
    # a group's help lists its subcommands: each under its first name, the others in its help
    for name, (_, _, where) in cli.VERBS.items():
        if isinstance(where, dict):
            text = outs[f"{name} (group)"][0][0]
            listed = _listed(text, "Commands")
            named = set(listed)
            for sub in listed:
                named |= {i.split(" ", 1)[1] for i in re.findall(rf"lamina ({name} \w+)",
                                                                 outs[f"{name} {sub}"][0][0])}
            assert named == set(where), name
    assert not os.path.exists(root)  # no verb opened (made) the store


def test_help_is_an_argument_after_a_command():
    """``-h`` in a container's command is the command's, not a request for help."""
    a = cli.verb_parser("create").parse_args(["img", "sh", "-h"])
    assert (a.image, a.command) == ("img", ["sh", "-h"])
    a = cli.verb_parser("run").parse_args(["--rm", "img", "ls", "--help"])
    assert (a.rm, a.image, a.command) == (True, "img", ["ls", "--help"])


def test_network_default_is_lamina_s():
    """--network takes any network name (checked by the store); its default is the default
    network lamina makes, as the runtime's RunConfig defaults to it."""
    from lamina.networks import DEFAULT
    from lamina.runtime.oci import RunConfig

    assert cli.verb_parser("run").parse_args(["img"]).network == DEFAULT == RunConfig().network


def test_main_module_imports_no_verb_module():
    """Start-up: the CLI's entry loads lamina.cli.main and its common helpers, no verb module."""
    code = ("import sys; import lamina.cli.main; "
            "print(' '.join(sorted(m for m in sys.modules if m.startswith('lamina'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["lamina", "lamina.cli", "lamina.cli.common", "lamina.cli.main", "lamina.errors"]


def test_parser_says_which_flags_were_given():
    parser = common.Parser("create", (("image", None, "IMAGE"), ("--rm", "bool", "x"),
                               ("-e --env", "list", "x"), ("--name", "string", "x"),
                               ("-i --interactive", "bool", "x"), ("-t --tty", "bool", "x")))
    assert parser.parse_args(["img"]).given == set()
    assert parser.parse_args(["--name", "n", "img"]).given == {"name"}
    # a flag given with its default value still counts; grouped short flags count each
    assert parser.parse_args(["--rm=false", "-it", "-e", "A=1", "img"]).given == {
        "rm", "interactive", "tty", "env"}
