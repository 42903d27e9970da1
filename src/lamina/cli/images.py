"""``lamina import``, ``images``, ``history``, ``tag``, ``rmi`` and ``image prune``: Docker's
flags and columns over the Engine's image methods."""


from .common import (
    FORMAT_HELP,
    UsageError,
    confirm,
    each,
    exit_now,
    json_lines,
    open_engine,
    reclaimed,
    short_id,
)

ARGS: dict[str, tuple] = {}  # verb -> its flags and positionals (see common.Parser)

ARGS["import"] = (
    ("file", None, "FILE|-"),
    ("reference", "?", "[REPOSITORY[:TAG]]"),
    ("-m --message", "string", "Set the commit message of the imported image", ""),
)


def cmd_import(opts, a):
    print(open_engine(opts).import_image(a.file, a.reference, message=a.message))

ARGS["images"] = (
    ("-a --all", "bool", "Show all images (default hides intermediate images)"),
    ("--format", "string", FORMAT_HELP),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only show image IDs"),
)


def cmd_images(opts, a):
    from .. import humanize
    from ..image import parse_rfc3339

    rows = open_engine(opts).images(all=a.all)
    if a.quiet:
        seen = []
        for r in rows:
            ident = r["ID"] if a.no_trunc else short_id(r["ID"])
            if ident not in seen:
                seen.append(ident)
        print("\n".join(seen)) if seen else None
        return
    if a.format:
        json_lines(({"Containers": "N/A", "CreatedAt": r["CreatedAt"],
                    "CreatedSince": humanize.ago(parse_rfc3339(r["CreatedAt"])),
                    "Digest": "<none>", "ID": short_id(r["ID"]), "Repository": r["Repository"],
                    "Size": humanize.size(r["Size"]), "SizeBytes": r["Size"], "Tag": r["Tag"]}
                   for r in rows), a.format)
        return
    print(humanize.table(
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        [[r["Repository"], r["Tag"], r["ID"] if a.no_trunc else short_id(r["ID"]),
          humanize.ago(parse_rfc3339(r["CreatedAt"])), humanize.size(r["Size"])] for r in rows]))

ARGS["history"] = (
    ("image", None, "IMAGE"),
    ("--format", "string", FORMAT_HELP),
    ("-H --human", "string", "Print sizes in human readable format ('false': in bytes)", "true"),
    ("--no-trunc", "bool", "Don't truncate output"),
    ("-q --quiet", "bool", "Only show image IDs"),
)


def cmd_history(opts, a):
    from .. import humanize

    rows = open_engine(opts).history(a.image)
    if a.quiet:
        print("\n".join(r["ID"] if a.no_trunc or r["ID"] == "<missing>" else short_id(r["ID"])
                        for r in rows))
        return
    if a.format:
        json_lines(({"Comment": r["Comment"], "CreatedAt": r["CreatedAt"],
                    "CreatedBy": r["CreatedBy"], "CreatedSince": humanize.ago(r["Created"]),
                    "ID": r["ID"] if r["ID"] == "<missing>" else short_id(r["ID"]),
                    "Size": humanize.size(r["Size"]), "SizeBytes": r["Size"]} for r in rows),
                   a.format)
        return

    def by(text):
        text = " ".join(text.split()) if not a.no_trunc else text
        return text if a.no_trunc or len(text) <= 45 else text[:44] + "…"

    print(humanize.table(
        ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
        [[r["ID"] if r["ID"] == "<missing>" or a.no_trunc else short_id(r["ID"]),
          humanize.ago(r["Created"]), by(r["CreatedBy"]),
          humanize.size(r["Size"]) if a.human != "false" else str(r["Size"]), r["Comment"]]
         for r in rows]))

ARGS["tag"] = (("source", None, "SOURCE_IMAGE[:TAG]"), ("target", None, "TARGET_IMAGE[:TAG]"))


def cmd_tag(opts, a):
    open_engine(opts).tag(a.source, a.target)

ARGS["rmi"] = (
    ("images", "+", "IMAGE [IMAGE...]"),
    ("-f --force", "bool", "Force removal of the image (of its tag; of an image containers use)"),
)


def cmd_rmi(opts, a):
    engine = open_engine(opts)
    each(a.images, lambda name: print("\n".join(engine.rmi([name], force=a.force))))

ARGS["image prune"] = (
    ("-a --all", "bool", "Remove all unused images, not just dangling ones"),
    ("-f --force", "bool", "Do not prompt for confirmation"),
)


def cmd_image_prune(opts, a):
    engine = open_engine(opts)
    what = "  - all images without at least one container associated to them" if a.all else \
        "  - all dangling images"
    if not confirm(a.force, what):
        return
    lines, size = engine.prune_images(all=a.all)
    if lines:
        print("Deleted Images:\n" + "\n".join(lines) + "\n")
    reclaimed(size)

ARGS["image analyze"] = (
    ("image", None, "IMAGE"),
    ("--format", ("table", "json"), "Format the output", "table"),
    ("--top", "int", "How many of the largest wasted paths to show", "10"),
    ("--no-trunc", "bool", "Don't truncate the instructions"),
    ("--ci", "bool", "Check the thresholds below: print PASS/FAIL, exit 1 if one fails"),
    ("--lowest-efficiency", "float", "Fail --ci below this efficiency (0 to 1)", "0.9"),
    ("--highest-wasted-bytes", "size",
     "Fail --ci above this many wasted bytes (20MB, 1GiB...; 'disabled')", "disabled"),
)

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3,
          "gb": 1000**3, "t": 1000**4, "tb": 1000**4, "kib": 1024, "mib": 1024**2,
          "gib": 1024**3, "tib": 1024**4}


def _size(text: str, flag: str) -> int:
    """``20MB``, ``1.5GiB``, ``300`` as bytes (dive's units: kB, MB and GB are powers of 1000)."""
    number = text.strip().rstrip("bBiIkKmMgGtT ")
    unit = text.strip()[len(number):].strip().lower()
    try:
        value = float(number)
    except ValueError:
        value = -1
    if value < 0 or unit not in _UNITS:
        raise UsageError(f"invalid size {text!r} for {flag} (a number of bytes, or with kB, MB, "
                         "GB, KiB, MiB, GiB)")
    return int(value * _UNITS[unit])


def cmd_image_analyze(opts, a):
    from .. import humanize
    from ..analyze import analyze

    try:
        top = int(a.top)
        lowest = float(a.lowest_efficiency)
    except ValueError:
        raise UsageError("--top takes a whole number, --lowest-efficiency a number") from None
    highest = None if a.highest_wasted_bytes == "disabled" else \
        _size(a.highest_wasted_bytes, "--highest-wasted-bytes")
    report = analyze(open_engine(opts).image_store, a.image, top=top)
    if a.format == "json":
        from .. import cjson

        print(cjson.dumps(report, indent=2))
    else:
        def instruction(text):
            text = " ".join(text.replace("/bin/sh -c #(nop) ", "").split())
            return text if a.no_trunc or len(text) <= 60 else text[:59] + "…"

        print(f"Image: {a.image} ({short_id(report['image'])})\n")
        print(humanize.table(
            ["LAYER", "SIZE", "ADDED", "CHANGED", "REMOVED", "WASTED", "INSTRUCTION"],
            [[str(r["index"]), humanize.size(r["size"]), str(r["added"]), str(r["changed"]),
              str(r["removed"]), humanize.size(r["wasted"]), instruction(r["created_by"])]
             for r in report["layers"]]))
        print(f"\nTotal image size:  {humanize.size(report['size'])}")
        print(f"Wasted space:      {humanize.size(report['wasted_bytes'])} "
              f"({report['wasted_paths']} paths)")
        print(f"Efficiency:        {report['efficiency'] * 100:.2f} %")
        if report["top"]:
            print("\nLargest wasted paths:")
            print(humanize.table(["COUNT", "WASTED", "PATH"],
                                 [[str(r["count"]), humanize.size(r["wasted"]), r["path"]]
                                  for r in report["top"]]))
    if a.ci:
        checks = [("lowest-efficiency", report["efficiency"] >= lowest,
                   f"efficiency {report['efficiency']:.4f}, lowest allowed {lowest}")]
        if highest is not None:
            checks.append(("highest-wasted-bytes", report["wasted_bytes"] <= highest,
                           f"{report['wasted_bytes']} bytes wasted, highest allowed {highest}"))
        print()
        for rule, passed, detail in checks:
            print(f"{'PASS' if passed else 'FAIL'}: {rule}: {detail}")
        if not all(passed for _, passed, _ in checks):
            print("Result: FAIL")
            exit_now(1)
        print("Result: PASS")
