"""``Checkpoint``: every piece of an executor's state, and its on-disk form.

A checkpoint is taken between batches (the single-threaded executor is
trivially aligned: the barrier has passed every node when the step returns).
It holds copies of the operator state arrays (hash tables, open windows and
panes, session lists, keyed-kernel records, timer heaps), the string
dictionaries of encoded key columns, per-node watermarks and idle flags, the
metric counters, sink outputs not yet taken, and — when a runner took it —
the position of every source and the checkpoint epoch.

On disk it is a directory::

    manifest.json        format, format version, DAG and per-node fingerprints,
                         watermarks, metrics, positions, and for every file
                         its size and SHA-256
    state-000.arrow      one Arrow IPC file per stateful node: one row, one
                         list column per state array
    dict-000.arrow       one per string dictionary: the values in code order
    pending-000.arrow    outputs a sink had not handed out yet

:meth:`Checkpoint.save` writes it under a temporary name, syncs it and
renames it into place, so a directory with the final name is complete.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import secrets
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa

from .. import _fs
from ..errors import CheckpointError

__all__ = ["Checkpoint", "FORMAT_VERSION"]

#: Version of the on-disk layout; :meth:`Checkpoint.load` reads exactly this one.
FORMAT_VERSION = 1
_FORMAT = "laminar_jit.checkpoint"
_MANIFEST = "manifest.json"


class Checkpoint:
    """A consistent snapshot of a :class:`~laminar_jit.DagExecutor`.

    Take one with :meth:`DagExecutor.checkpoint`, write it with :meth:`save`,
    read it back with :meth:`load`, and continue from it with
    :meth:`DagExecutor.restore` on an executor of the same DAG: the restored
    executor fed the rest of the input produces exactly what the original
    would have.

    Attributes
    ----------
    dag_fingerprint : str or None
        Fingerprint of the DAG the checkpoint was taken from.
    node_fingerprints : dict of str to (str or None)
        Per node: a digest of its kind, configuration, kernels and inputs.
    states : dict of str to dict of str to numpy.ndarray
        Per stateful node: its state arrays by name.
    dictionaries : dict of str to pyarrow.Array
        Per ``"source/column"`` string key column: the values in code order.
    pending : dict of str to pyarrow.Table
        Per sink: rows it had received but not handed out yet.
    watermarks : dict of str to int
        Per node: its event-time watermark.
    idle : list of str
        Sources marked idle.
    metrics : dict
        ``counters`` (list of int), ``events_in``, ``batches``.
    finished : bool
        Whether :meth:`DagExecutor.finish` had been called.
    positions : dict of str to int
        Rows consumed per source, set by the runner (``{}`` otherwise); for
        a source a partitioned run read as ``n`` shards, also each shard's
        (``"<source>@shard<i>/<n>"``).
    epoch : int or None
        Checkpoint number within a run, set by the runner.
    created : str
        UTC time of capture, ISO 8601.

    Examples
    --------
    >>> cp = ex.checkpoint()                         # doctest: +SKIP
    >>> cp.save("chk/0001")                          # doctest: +SKIP
    >>> ex2 = lj.DagExecutor(dag)                    # doctest: +SKIP
    >>> ex2.restore(lj.Checkpoint.load("chk/0001"))  # doctest: +SKIP
    """

    def __init__(self, *, dag_fingerprint, node_fingerprints, states, dictionaries, pending, watermarks,
                 idle, metrics, finished, positions=None, epoch=None, created=None):
        self.dag_fingerprint = dag_fingerprint
        self.node_fingerprints = dict(node_fingerprints)
        self.states = states
        self.dictionaries = dictionaries
        self.pending = pending
        self.watermarks = dict(watermarks)
        self.idle = list(idle)
        self.metrics = metrics
        self.finished = bool(finished)
        self.positions = dict(positions or {})
        self.epoch = epoch
        self.created = created or _dt.datetime.now(_dt.timezone.utc).isoformat()

    def __repr__(self) -> str:
        keys = sum(int(a["table.meta"][0]) for a in self.states.values() if "table.meta" in a)
        return (f"Checkpoint(epoch={self.epoch}, nodes with state={len(self.states)}, entries={keys:,}, "
                f"positions={self.positions}, created={self.created!r})")

    @property
    def nbytes(self) -> int:
        """Bytes of state arrays held (pending outputs and dictionaries not included)."""
        return sum(a.nbytes for arrays in self.states.values() for a in arrays.values())

    # ------------------------------------------------------------------ save
    def save(self, path) -> Path:
        """Write the checkpoint to the directory ``path`` atomically.

        Files are written under a temporary name next to ``path``, synced to
        disk, and the directory is renamed to ``path`` only when complete.

        Parameters
        ----------
        path : str or os.PathLike
            The directory to create; it must not exist yet. Parent
            directories are created.

        Returns
        -------
        pathlib.Path
            ``path``.

        Raises
        ------
        CheckpointError
            ``path`` exists, or writing failed — a full disk, no permission, an
            I/O error; the message names the path, the cause and the fix, and
            nothing is left behind (an existing checkpoint elsewhere is never
            touched).
        """
        path = Path(path)
        if path.exists():
            raise CheckpointError(f"cannot save the checkpoint to {str(path)!r}: it already exists; "
                                  "save to a new directory (checkpoints are never overwritten)")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp.mkdir()
            files = {}
            for i, (node, arrays) in enumerate(sorted(self.states.items())):
                files[f"state-{i:03d}.arrow"] = {"kind": "state", "node": node,
                                                  **_write(tmp / f"state-{i:03d}.arrow", _arrays_batch(arrays))}
            for i, (key, values) in enumerate(sorted(self.dictionaries.items())):
                batch = pa.record_batch([values], names=["values"])
                files[f"dict-{i:03d}.arrow"] = {"kind": "dictionary", "column": key,
                                                 **_write(tmp / f"dict-{i:03d}.arrow", batch)}
            for i, (sink, table) in enumerate(sorted(self.pending.items())):
                files[f"pending-{i:03d}.arrow"] = {"kind": "pending", "sink": sink,
                                                    **_write(tmp / f"pending-{i:03d}.arrow", table)}
            manifest = {
                "format": _FORMAT, "format_version": FORMAT_VERSION, "created": self.created,
                "epoch": self.epoch, "dag_fingerprint": self.dag_fingerprint,
                "node_fingerprints": self.node_fingerprints, "watermarks": self.watermarks, "idle": self.idle,
                "metrics": self.metrics, "finished": self.finished, "positions": self.positions, "files": files,
            }
            _fs.write_file(tmp / _MANIFEST, json.dumps(manifest, indent=1).encode("utf-8"))
            _fs.fsync_dir(tmp)
            _fs.replace(tmp, path)
        except BaseException as e:
            shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError):
                raise CheckpointError(f"could not write the checkpoint to {str(path)!r}: "
                                      f"{_fs.explain_os_error(e)}; nothing of it was left behind") from e
            raise
        try:
            _fs.fsync_dir(path.parent)
        except OSError as e:  # the checkpoint is complete under its name; only the rename may not be durable
            raise CheckpointError(f"the checkpoint {str(path)!r} was written but its directory entry could not be "
                                  f"synced: {_fs.explain_os_error(e)}; it is complete, but may be lost if the "
                                  "machine fails now") from e
        return path

    # ------------------------------------------------------------------ load
    @classmethod
    def load(cls, path) -> "Checkpoint":
        """Read a checkpoint directory written by :meth:`save`, verifying every file.

        Parameters
        ----------
        path : str or os.PathLike

        Raises
        ------
        CheckpointError
            No manifest, an unreadable manifest, another format or format
            version, a missing, truncated or corrupted file (size or SHA-256
            differs from the manifest).
        """
        path = Path(path)
        manifest = _read_manifest(path)
        states, dictionaries, pending = {}, {}, {}
        for name, entry in manifest["files"].items():
            try:
                kind = entry["kind"]
                data = _verified(path, name, entry)
                reader = pa.ipc.open_file(pa.py_buffer(data))
                table = reader.read_all()
                if kind == "state":
                    states[entry["node"]] = _batch_arrays(table, path / name)
                elif kind == "dictionary":
                    dictionaries[entry["column"]] = table.column("values").combine_chunks()
                elif kind == "pending":
                    pending[entry["sink"]] = table
                else:
                    raise CheckpointError(f"checkpoint {str(path)!r}: file {name} has unknown kind {kind!r}")
            except (pa.ArrowException, KeyError, TypeError, ValueError) as e:
                raise CheckpointError(f"checkpoint {str(path)!r}: cannot read {name} ({type(e).__name__}: {e}); "
                                      "the checkpoint is damaged — restore from an older one") from e
        try:
            return cls(dag_fingerprint=manifest["dag_fingerprint"], node_fingerprints=manifest["node_fingerprints"],
                       states=states, dictionaries=dictionaries, pending=pending,
                       watermarks={k: int(v) for k, v in manifest["watermarks"].items()}, idle=manifest["idle"],
                       metrics=manifest["metrics"], finished=manifest["finished"],
                       positions={k: int(v) for k, v in manifest["positions"].items()},
                       epoch=manifest["epoch"], created=manifest["created"])
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise CheckpointError(f"checkpoint {str(path)!r}: manifest.json lacks or mangles {e}; "
                                  "the checkpoint is damaged — restore from an older one") from e


# ---------------------------------------------------------------------- files
def _write(path: Path, data: pa.RecordBatch | pa.Table) -> dict:
    """Write ``data`` as an Arrow IPC file, sync it, return its size and SHA-256."""
    stream = pa.BufferOutputStream()
    with pa.ipc.new_file(stream, data.schema) as writer:
        writer.write(data)
    buf = memoryview(stream.getvalue())
    _fs.write_file(path, buf)
    return {"bytes": buf.nbytes, "sha256": hashlib.sha256(buf).hexdigest()}


def _read_manifest(path: Path) -> dict:
    where = f"checkpoint {str(path)!r}"
    if not (path / _MANIFEST).is_file():
        raise CheckpointError(f"{where}: no {_MANIFEST} — not a checkpoint directory written by Checkpoint.save "
                              "(or its save never completed)")
    try:
        manifest = json.loads((path / _MANIFEST).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{where}: {_MANIFEST} is not valid JSON ({e}); the file is truncated or "
                              "corrupted — restore from an older checkpoint") from e
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise CheckpointError(f"{where}: {_MANIFEST} is not a laminar_jit checkpoint manifest "
                              f"(format {manifest.get('format') if isinstance(manifest, dict) else None!r})")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{where}: format version {version!r}, but this laminar_jit reads version "
                              f"{FORMAT_VERSION}; restore it with the laminar_jit release that wrote it")
    if not isinstance(manifest.get("files"), dict):
        raise CheckpointError(f"{where}: {_MANIFEST} has no file list; the checkpoint is damaged")
    return manifest


def _verified(path: Path, name: str, entry: dict) -> bytes:
    file = path / name
    if not file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r}: {name} is missing; the checkpoint is incomplete — "
                              "restore from an older one")
    data = file.read_bytes()
    if len(data) != entry["bytes"]:
        raise CheckpointError(f"checkpoint {str(path)!r}: {name} has {len(data):,} bytes, the manifest says "
                              f"{entry['bytes']:,}; the file is truncated or was replaced — restore from an older one")
    if hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise CheckpointError(f"checkpoint {str(path)!r}: {name} fails its SHA-256 check; the file is "
                              "corrupted — restore from an older checkpoint")
    return data


# ------------------------------------------------------ arrays <-> Arrow
def _arrays_batch(arrays: dict[str, np.ndarray]) -> pa.RecordBatch:
    """One row; per array a large_list column holding it flattened, dtype and shape in the field metadata."""
    columns, fields = [], []
    for name, arr in arrays.items():
        flat = np.ascontiguousarray(arr).reshape(-1)
        if flat.dtype.kind not in "iuf":  # bool and anything else: raw bytes
            flat = flat.view(np.uint8)
        values = pa.array(flat)
        columns.append(pa.LargeListArray.from_arrays(pa.array([0, len(values)], pa.int64()), values))
        meta = {"dtype": arr.dtype.str, "shape": json.dumps(list(arr.shape))}
        fields.append(pa.field(name, columns[-1].type, nullable=False, metadata=meta))
    return pa.RecordBatch.from_arrays(columns, schema=pa.schema(fields))


def _batch_arrays(table: pa.Table, where: Path) -> dict[str, np.ndarray]:
    out = {}
    for field, column in zip(table.schema, table.columns):
        meta = field.metadata or {}
        if b"dtype" not in meta or b"shape" not in meta or column.num_chunks != 1 or len(column) != 1:
            raise CheckpointError(f"{where}: column {field.name!r} is not a state array (no dtype/shape)")
        dtype = np.dtype(meta[b"dtype"].decode())
        shape = tuple(json.loads(meta[b"shape"]))
        flat = column.chunk(0).values.to_numpy(zero_copy_only=False)
        if flat.dtype != dtype:
            flat = flat.view(dtype)
        if flat.size != int(np.prod(shape)):
            raise CheckpointError(f"{where}: array {field.name!r} has {flat.size} values, its shape says {list(shape)}")
        out[field.name] = np.array(flat.reshape(shape), copy=True)
    return out
