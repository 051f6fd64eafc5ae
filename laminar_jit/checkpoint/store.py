"""The checkpoint directory of ``lj.run``: numbered checkpoints under one root, one run at a time."""

from __future__ import annotations

import fcntl
import re
import shutil
from pathlib import Path

from .. import _fs
from ..errors import CheckpointError
from .snapshot import Checkpoint

__all__ = ["CheckpointStore", "chk_epochs"]

_CHECKPOINT = re.compile(r"^chk-(\d{8})$")


class CheckpointStore:
    """``chk-<epoch>`` directories under one root; the newest complete one wins.

    Held by one run at a time: an exclusive lock on ``root/.lock`` until
    :meth:`close` (the OS releases it on a crash). ``keep`` is how many of
    the newest checkpoints :meth:`save` leaves on disk.
    """

    def __init__(self, root: Path, keep: int):
        self.root, self.keep = root, keep
        try:
            root.mkdir(parents=True, exist_ok=True)
            # One run per directory: an exclusive lock held until close() (released by the OS on a crash).
            self._lock = open(root / ".lock", "a+")
        except OSError as e:
            raise CheckpointError(f"checkpoint_dir {str(root)!r} cannot be created or written: "
                                  f"{_fs.explain_os_error(e)}") from e
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise CheckpointError(f"checkpoint_dir {str(root)!r} is in use by another run; wait for it to end "
                                  "or give this run its own directory") from None
        for p in root.glob(".chk-*"):  # a save a crash interrupted
            shutil.rmtree(p, ignore_errors=True)

    def close(self) -> None:
        self._lock.close()

    def epochs(self) -> list[int]:
        return chk_epochs(self.root)

    def latest(self) -> Checkpoint | None:
        return self.read_latest(self.root)

    @staticmethod
    def read_latest(root: Path) -> Checkpoint | None:
        """The newest ``chk-<epoch>`` checkpoint under ``root`` (None when there is none), without the lock.

        Raises
        ------
        CheckpointError
            It is damaged, or was renamed (the message says how to roll back).
        """
        epochs = chk_epochs(root)
        if not epochs:
            return None
        path = root / f"chk-{epochs[-1]:08d}"
        try:
            cp = Checkpoint.load(path)
        except CheckpointError as e:
            raise CheckpointError(f"{e}. To resume from the previous checkpoint instead, delete {str(path)!r} "
                                  "(exactly-once sinks roll back to it)") from e
        if cp.epoch != epochs[-1]:
            raise CheckpointError(f"checkpoint {str(path)!r} says it is epoch {cp.epoch}, its name says "
                                  f"{epochs[-1]}; it was moved or renamed — restore the original name")
        return cp

    def save(self, cp: Checkpoint) -> None:
        cp.save(self.root / f"chk-{cp.epoch:08d}")
        for old in self.epochs()[:-self.keep]:
            shutil.rmtree(self.root / f"chk-{old:08d}", ignore_errors=True)


def chk_epochs(root: Path) -> list[int]:
    """Epochs of the ``chk-<epoch>`` checkpoints under ``root`` (of one-process runs), oldest first."""
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _CHECKPOINT.match(p.name))) if root.is_dir() else []
