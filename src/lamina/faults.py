"""Fault points: named places where a test can make lamina die, for crash-safety trials.

``point("blob.renamed")`` marks a moment between two steps that a crash could separate. With
``LAMINA_FAULT=blob.renamed`` in the environment the process SIGKILLs itself the first time it
gets there; ``LAMINA_FAULT=blob.renamed:3`` at the third time. ``LAMINA_FAULT_LOG=FILE`` appends
the name of every point reached to FILE, one a line (how a test learns which points a command
passes, and how often). Both are read once, when this module is imported; children inherit them.

With neither set, ``point`` is a function that does nothing: one call per point, no other cost,
no import beyond ``os``. The points, in the order a write usually passes them:

======================  ===========================================================================
``blob.written``        a blob's bytes are written under ``ingest/``, claimed, not named
``blob.renamed``        the blob is named in ``blobs/sha256``; nothing references it yet
``blob.aside``          a trashed blob was renamed aside (``ingest/<pid>-unclaimed-*``), not deleted
``snapshot.staged``     a snapshot's directory exists, its row is not inserted yet
``extract.mid``         one more member of a layer tar has been extracted (hit once per member)
``trash.filed``         a snapshot's row is deleted and its paths are filed in ``trash`` (uncommitted)
``index.written``       ``ingest/<pid>-index.json.tmp`` is written and fsynced, not renamed over the index
``tx.before-commit``    a write transaction is about to COMMIT
``tx.after-commit``     it has committed; what runs after it (settle, index, purge) has not
``tx.*-rollback``       ``tx.before-rollback``, ``tx.after-rollback``: the same for a rollback
``purge.mid``           one trashed path is deleted, its trash row is not
``volume.set-aside``    a removed volume's directory was renamed aside, the transaction not committed
``gc.sweep``            a prune between two removals (containers, images, volumes)
``save.member``         ``save -o`` wrote one more blob into its (unnamed) output file
``layer.migrated``      an older store's layer got its tar-split record (committed); its blob is
                        filed for deletion, maybe not deleted yet
======================  ===========================================================================
"""

import os


def _off(name: str) -> None:
    """No fault asked for: nothing to do."""


def _armed(wanted: str | None, log: str | None):
    """The ``point`` function for ``LAMINA_FAULT=wanted`` (``NAME`` or ``NAME:N``) and
    ``LAMINA_FAULT_LOG=log``. Its hit count lives in this closure, not in a module global."""
    name, _, nth = (wanted or "").partition(":")
    target = int(nth) if nth.isdigit() and int(nth) > 0 else 1
    hits = 0

    def point(here: str) -> None:
        nonlocal hits
        if log is not None:
            with open(log, "a") as f:
                f.write(here + "\n")
        if here == name:
            hits += 1
            if hits == target:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)

    return point


def _make():
    wanted = os.environ.get("LAMINA_FAULT") or None
    log = os.environ.get("LAMINA_FAULT_LOG") or None
    return _off if wanted is None and log is None else _armed(wanted, log)


point = _make()
