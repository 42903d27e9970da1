"""``lamina import``, ``images``, ``history``, ``tag``, ``rmi`` and ``image prune``: Docker's
flags and columns over the Engine's image methods."""


from .common import FORMAT_HELP, confirm, each, json_lines, open_engine, reclaimed, short_id

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
