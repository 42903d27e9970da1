"""``lamina system df``, ``system check``, ``system prune``, ``info`` and ``version``."""

import os
import sys

from .common import FORMAT_HELP, confirm, json_lines, open_engine, reclaimed, short_id

ARGS: dict[str, tuple] = {}  # verb -> its flags and positionals (see common.Parser)

ARGS["system df"] = (
    ("--format", "string", FORMAT_HELP),
    ("-v --verbose", "bool", "Show detailed information on space usage"),
)


def cmd_system_df(opts, a):
    from .. import humanize

    df = open_engine(opts).system_df()

    def reclaim(s):
        pct = f" ({s['Reclaimable'] * 100 // s['Size']}%)" \
            if s["Size"] and s["Type"] not in ("Build Cache", "Store Overhead") else ""
        return humanize.size(s["Reclaimable"]) + pct

    if a.format:
        json_lines(({"Active": str(s["Active"]), "Reclaimable": reclaim(s),
                    "ReclaimableBytes": s["Reclaimable"], "Size": humanize.size(s["Size"]),
                    "SizeBytes": s["Size"], "TotalCount": str(s["TotalCount"]), "Type": s["Type"]}
                   for s in df["Summary"]), a.format)
        return
    shared = df["Shared"]
    shared_line = (f"\nShared data blocks (lamina system dedup): {humanize.size(shared['Bytes'])}"
                   f" of the above stored once ({shared['Files']} files)"
                   if shared["Bytes"] else "")
    if not a.verbose:
        print(humanize.table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
                             [[s["Type"], str(s["TotalCount"]), str(s["Active"]),
                               humanize.size(s["Size"]), reclaim(s)] for s in df["Summary"]]))
        if shared_line:
            print(shared_line)
        return
    print("Images space usage:\n")
    print(humanize.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE", "SHARED SIZE", "UNIQUE SIZE", "CONTAINERS"],
        [[i["Repository"], i["Tag"], short_id(i["ID"]), i["CreatedAt"][:19].replace("T", " "),
          humanize.size(i["Size"]), humanize.size(i["SharedSize"]), humanize.size(i["UniqueSize"]),
          str(i["Containers"])] for i in df["Images"]]))
    print("\nContainers space usage:\n")
    print(humanize.table(
        ["CONTAINER ID", "IMAGE", "COMMAND", "LOCAL VOLUMES", "SIZE", "CREATED", "STATUS", "NAMES"],
        [[c["ID"][:12], c["Image"], f'"{c["Command"]}"', "0", humanize.size(c["SizeRw"]),
          humanize.ago(c["Created"]), c["State"].capitalize(), c["Names"]] for c in df["Containers"]]))
    print("\nLocal Volumes space usage:\n")
    print(humanize.table(["VOLUME NAME", "LINKS", "SIZE"],
                         [[v["Name"], str(v["Links"]), humanize.size(v["Size"])]
                          for v in df.get("Volumes", [])]))
    print("\nBuild cache usage: 0B")
    print("\nLayers space usage:\n")
    print(humanize.table(
        ["LAYER ID", "SIZE", "ON DISK", "IMAGES", "SHARED SIZE", "UNIQUE SIZE"],
        [[layer["ID"][7:19], humanize.size(layer["Size"]), humanize.size(layer["DiskSize"]),
          str(layer["Images"]), humanize.size(layer["Size"] if layer["Shared"] else 0),
          humanize.size(0 if layer["Shared"] else layer["Size"])] for layer in df["Layers"]]))
    over = df["Overhead"]
    print("\nStore overhead:\n")
    print(humanize.table(["PART", "SIZE"], [
        ["Metadata (database)", humanize.size(over["Metadata"])],
        [f"  of which tar-split records ({over['Records']})", humanize.size(over["RecordBytes"])],
        ["Kept blobs (configs, manifests, pull cache)", humanize.size(over["Blobs"])],
        ["Layer directories and driver files", humanize.size(over["Layers"])],
        ["Container layer directories, init layers", humanize.size(over["Containers"])],
        ["Volume directories", humanize.size(over["Volumes"])],
        ["Other (bundles, index.json, mount points)", humanize.size(over["Other"])],
        ["Total", humanize.size(over["Size"])]]))
    if shared_line:
        print(shared_line)

ARGS["system check"] = (
    ("-r --repair", "bool", "Repair what can be repaired"),
    ("--quick", "bool", "Skip reading every layer file against its tar-split record"),
)


def cmd_system_check(opts, a):
    engine = open_engine(opts)
    findings = engine.check(repair=a.repair, quick=a.quick)
    for item in findings:
        print(item)
    if not findings:
        print("No problems found")
    elif a.repair:
        # what is left is what a check finds now, not what this one failed to fix: a repair
        # that moved a problem elsewhere is not called done
        left = engine.check(quick=a.quick)
        for item in left:
            if not any(str(item) == str(f) for f in findings if not f.fixed):
                print(item)
        print(f"{sum(f.fixed for f in findings)} problem(s) repaired, {len(left)} left")
        if left:
            sys.exit(1)
        return
    else:
        print(f"{len(findings)} problem(s) found; `lamina system check --repair` fixes what it can")
    if any(not f.fixed for f in findings):
        sys.exit(1)

ARGS["system dedup"] = (
    ("-n --dry-run", "bool", "Say what would be shared, change nothing"),
)


def cmd_system_dedup(opts, a):
    from .. import humanize

    done = open_engine(opts).dedup(dry_run=a.dry_run)
    print(f"Scanned {done['Files']} files in {done['Layers']} layers: {done['Shared']} files in "
          f"{done['Groups']} groups of identical content")
    if a.dry_run:
        print(f"Would free {humanize.size(done['Newly'])} (shared already: "
              f"{humanize.size(done['Saved'] - done['Newly'])})")
        return
    print(f"Freed {humanize.size(done['Newly'])}; stored once in all: "
          f"{humanize.size(done['Saved'])}")
    if done["Differed"] or done["Failed"]:
        print(f"Left alone: {done['Differed']} files that changed while they were compared, "
              f"{done['Failed']} the filesystem refused")

ARGS["system config"] = (
    ("option", "?", "keep-pulled-blobs (pulled layers' compressed blobs kept as a pull cache)"),
    ("value", "?", "Its new value: true or false"),
)


def cmd_system_config(opts, a):
    engine = open_engine(opts)
    if a.option is None:
        for key, value in engine.store_options().items():
            print(f"{key}={value}")
        return
    print(engine.store_option(a.option, a.value))


ARGS["system prune"] = (
    ("-a --all", "bool", "Remove all unused images, not just dangling ones"),
    ("-f --force", "bool", "Do not prompt for confirmation"),
    ("--volumes", "bool", "Also remove the volumes no container uses"),
)


def cmd_system_prune(opts, a):
    engine = open_engine(opts)
    what = ["  - all stopped containers"]
    if a.volumes:
        what.append("  - all volumes not used by at least one container")
    what.append("  - all images without at least one container associated to them" if a.all
                else "  - all dangling images")
    if not confirm(a.force, "\n".join(what)):
        return
    result = engine.prune_system(all=a.all, volumes=a.volumes)
    if result["Containers"]:
        print("Deleted Containers:\n" + "\n".join(result["Containers"]) + "\n")
    if result["Volumes"]:
        print("Deleted Volumes:\n" + "\n".join(result["Volumes"]) + "\n")
    if result["Images"]:
        print("Deleted Images:\n" + "\n".join(result["Images"]) + "\n")
    reclaimed(result["Reclaimed"])

ARGS["info"] = ()


def cmd_info(opts, a):
    from .. import cjson

    engine = open_engine(opts)
    info = {"Root": engine.root, "Driver": engine.driver, **engine.counts()}
    print(cjson.dumps(info, indent=2))

ARGS["unshare"] = (
    ("command", "...", "[COMMAND [ARG...]]"),
)


def cmd_unshare(opts, a):
    """Run COMMAND (default: $SHELL) as root of the store's user namespace, with its mounts
    (as ``podman unshare``); LAMINA_ROOT names the store for the lamina commands it runs."""
    from ..errors import FailedPrecondition
    from ..userns import in_user_namespace

    if not in_user_namespace():
        raise FailedPrecondition("please use unshare with rootless: root's store needs no "
                                 "user namespace")
    argv = list(a.command) or [os.environ.get("SHELL") or "/bin/sh"]
    from ..store import default_root

    root = os.path.abspath(opts.root or os.environ.get("LAMINA_ROOT") or default_root())
    env = dict(os.environ, LAMINA_ROOT=root)
    sys.stdout.flush()
    try:
        os.execvpe(argv[0], argv, env)
    except OSError as e:
        from ..errors import NotFound

        raise NotFound(f"cannot run {argv[0]}: {e.strerror}") from None


ARGS["version"] = ()


def cmd_version(opts, a):
    from .. import __version__

    print(f"lamina {__version__}")
