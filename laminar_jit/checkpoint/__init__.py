"""Checkpoints: consistent snapshots of an executor, on disk as Arrow IPC files plus a manifest."""

from .snapshot import FORMAT_VERSION, Checkpoint

__all__ = ["Checkpoint", "FORMAT_VERSION"]
