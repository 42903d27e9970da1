"""``lamina network create|ls|inspect|rm|prune|connect|disconnect`` and ``port``: Docker's
flags and output over the Engine's network methods (see :mod:`lamina.networks`)."""

import sys

from .common import FORMAT_HELP, UsageError, each, exit_now, inspect_each, json_lines, open_engine

ARGS = {
    "network create": (
        ("name", None, "NETWORK"),
        ("-d --driver", "string", "Driver to manage the Network", "bridge"),
        ("--gateway", "string", "IPv4 Gateway for the master subnet"),
        ("--internal", "bool", "Restrict external access to the network"),
        ("--label", "list", "Set metadata on a network"),
        ("--subnet", "string", "Subnet in CIDR format that represents a network segment"),
    ),
    "network ls": (
        ("-f --filter", "list", "Provide filter values (e.g. 'driver=bridge', 'name=NAME')"),
        ("--format", "string", FORMAT_HELP),
        ("--no-trunc", "bool", "Do not truncate the output"),
        ("-q --quiet", "bool", "Only display network IDs"),
    ),
    "network inspect": (
        ("names", "+", "NETWORK [NETWORK...]"),
        ("-f --format", "string", "Format the output using the given Go template"),
    ),
    "network rm": (("names", "+", "NETWORK [NETWORK...]"),),
    "network prune": (("-f --force", "bool", "Do not prompt for confirmation"),),
    "network connect": (
        ("network", None, "NETWORK"),
        ("container", None, "CONTAINER"),
        ("--alias", "list", "Add network-scoped alias for the container"),
        ("--ip", "string", "IPv4 address (e.g., 172.30.100.104)"),
    ),
    "network disconnect": (
        ("network", None, "NETWORK"),
        ("container", None, "CONTAINER"),
        ("-f --force", "bool", "Force the container to disconnect from a network"),
    ),
    "port": (
        ("container", None, "CONTAINER"),
        ("port", "?", "[PRIVATE_PORT[/PROTO]]"),
    ),
}


def _labels(values: list[str]) -> dict:
    out = {}
    for item in values:
        key, _, value = item.partition("=")
        if not key:
            raise UsageError(f"invalid label {item!r}: KEY[=VALUE]")
        out[key] = value
    return out


def cmd_network_create(opts, a):
    print(open_engine(opts).network_create(a.name, driver=a.driver, subnet=a.subnet,
                                           gateway=a.gateway, internal=a.internal,
                                           labels=_labels(a.label)))


def _filter(values: list[str]):
    """Docker's ``network ls`` filters: driver, id, label, name, scope, type."""
    wanted: dict[str, list[str]] = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or key not in ("driver", "id", "label", "name", "scope", "type"):
            raise UsageError(f"invalid filter '{item}'")
        wanted.setdefault(key, []).append(value)

    def keep(record) -> bool:
        builtin = record["name"] in ("bridge", "host", "none")
        checks = {
            "driver": lambda v: record["driver"] == v,
            "id": lambda v: record["id"].startswith(v),
            "name": lambda v: v in record["name"],
            "scope": lambda v: v == "local",
            "type": lambda v: (v == "builtin") == builtin,
            "label": lambda v: v.partition("=")[0] in record["labels"] and (
                "=" not in v or record["labels"][v.partition("=")[0]] == v.partition("=")[2]),
        }
        return all(any(checks[k](v) for v in vs) for k, vs in wanted.items())
    return keep


def cmd_network_ls(opts, a):
    from .. import humanize

    keep = _filter(a.filter)
    rows = [r for r in open_engine(opts).networks() if keep(r)]

    def ident(r):
        return r["id"] if a.no_trunc else r["id"][:12]
    if a.quiet:
        for r in rows:
            print(ident(r))
    elif a.format:
        from ..image import rfc3339

        json_lines(({"CreatedAt": rfc3339(r["created"]) if r["created"] else "",
                     "Driver": r["driver"], "ID": ident(r), "IPv6": "false",
                     "Internal": str(r["internal"]).lower(),
                     "Labels": ",".join(f"{k}={v}" for k, v in sorted(r["labels"].items())),
                     "Name": r["name"], "Scope": "local"} for r in rows), a.format)
    else:
        print(humanize.table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                             [[ident(r), r["name"], r["driver"], "local"] for r in rows]))


def cmd_network_inspect(opts, a):
    inspect_each(a.names, open_engine(opts).network_inspect,
                 None if a.format in (None, "json") else a.format)


def cmd_network_rm(opts, a):
    engine = open_engine(opts)
    each(a.names, lambda name: (engine.network_rm(name), print(name)))


def cmd_network_prune(opts, a):
    if not a.force:
        print("WARNING! This will remove all custom networks not used by at least one container.\n"
              "Are you sure you want to continue? [y/N] ", end="", flush=True)
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            return
    names = open_engine(opts).network_prune()
    if names:
        print("Deleted Networks:\n" + "\n".join(names) + "\n")


def cmd_network_connect(opts, a):
    open_engine(opts).network_connect(a.network, a.container, tuple(a.alias), a.ip or "")


def cmd_network_disconnect(opts, a):
    open_engine(opts).network_disconnect(a.network, a.container)


def cmd_port(opts, a):
    ports = open_engine(opts).ports(a.container)
    if a.port:
        number, _, proto = a.port.partition("/")
        matches = [p for p in ports if str(p["ContainerPort"]) == number
                   and p["Protocol"] == (proto or "tcp")]
        if not matches:
            print(f"Error: No public port '{number}/{proto or 'tcp'}' published for "
                  f"{a.container}", file=sys.stderr)
            exit_now(1)
        for p in matches:
            print(f"{p['HostIp']}:{p['HostPort']}")
        return
    for p in ports:
        print(f"{p['ContainerPort']}/{p['Protocol']} -> {p['HostIp']}:{p['HostPort']}")
