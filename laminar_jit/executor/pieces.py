"""A key shard's call of its step: the shard's rows of a batch, piece by piece, and the sinks' rows of all pieces.

A key shard's plan compiles the same kind of ``step`` as one executor's, with two
more arguments after ``idle``: ``shard_rows``, the shard's rows of the piece (as
positions in it), and ``source_wms``, the source's watermark before each row of
the piece and after its last (the batch's, so every shard sees the same
watermarks). :class:`ShardStep` is what :mod:`.shards` calls for a batch: it
runs the step on each piece ``cuts[p]:cuts[p + 1]`` and appends each result
over the pieces with numpy, so the compiled code of a key shard is its step
alone. A compiled loop over the pieces would be written out result by result
and link the step's code into a module of its own: for a plan of forty results
its compile took 4.5 s, more than the step's. Batches run in one piece unless a
window operator cuts them, so the loop is usually one call, and the step
releases the GIL.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..kernels.merging import piece_rows

__all__ = ["PieceLayout", "ShardStep"]

_EMPTY_VALID = np.empty(0, np.bool_)


@dataclass(frozen=True)
class PieceLayout:
    """Where a sharded step's arguments and results are, for :class:`ShardStep`."""

    #: Column arguments (value and validity arrays, in order) before ``offsets``.
    columns: int
    #: Positions among them read whole by every piece (a string dictionary's offsets and bytes).
    whole: frozenset
    #: Results that are a sink's rows (positions in the piece; the next result is the step's ``ident`` flag).
    rows: tuple
    #: Results that are a column's values (the next result is their validity, empty when all are valid).
    values: tuple
    #: Ids of the boundary nodes, whose watermark before and after each piece follows the results.
    boundaries: tuple
    #: The step's results.
    returns: int


class ShardStep:
    """``step(rows, cuts, wms, *columns, offsets, settings, metrics, wm, idle, *state)`` of a key shard.

    ``rows`` are the shard's rows (ascending positions in the batch), ``cuts``
    the batch's pieces and ``wms`` the source's watermark before each row of
    the batch and after its last (or empty for a stage without one). Returns
    the step's results with every sink's rows as positions in the batch and,
    in place of its ``ident`` flag, where each piece's rows start; each
    column's values and validity appended over the pieces; then per boundary
    node its watermark before and after each piece.
    """

    def __init__(self, step, layout: PieceLayout):
        self.step = step
        self.layout = layout
        self._ids = np.array(layout.boundaries, np.int64)

    def __call__(self, rows, cuts, wms, *args):
        lay = self.layout
        # (rest: offsets, settings, metrics, wm, idle; the state arrays follow)
        columns, rest = args[:lay.columns], args[lay.columns:lay.columns + 5]
        state = args[lay.columns + 5:]
        wm = rest[3]
        if cuts.size == 2:  # one piece, the usual case: the step's arrays as they are
            lo, hi = int(cuts[0]), int(cuts[1])
            before = wm[self._ids]
            out = list(self.step(hi - lo, *columns, *rest, rows, wms[lo:hi + 1], *state))
            for k in lay.rows:
                out[k] = np.add(out[k], lo, dtype=np.int64)
                out[k + 1] = np.array((0, out[k].size), np.int64)
            after = wm[self._ids]
            for j in range(self._ids.size):
                out += [before[j:j + 1], after[j:j + 1]]
            return tuple(out)
        pieces = cuts.size - 1
        before = np.empty((self._ids.size, pieces), np.int64)
        after = np.empty_like(before)
        results = []
        a = 0
        for p in range(pieces):
            lo, hi = int(cuts[p]), int(cuts[p + 1])
            shard_rows, a = piece_rows(rows, a, lo, hi)  # the shard's rows of this piece, as positions in it
            cols = [c if i in lay.whole else c[lo:hi] for i, c in enumerate(columns)]
            before[:, p] = wm[self._ids]
            results.append((lo, self.step(hi - lo, *cols, *rest, shard_rows, wms[lo:hi + 1], *state)))
            after[:, p] = wm[self._ids]
        out = [None] * lay.returns
        for k in lay.rows:
            parts = [np.add(r[k], lo, dtype=np.int64) for lo, r in results]
            out[k] = np.concatenate(parts)
            starts = np.zeros(cuts.size, np.int64)
            starts[1:] = np.cumsum([part.size for part in parts])
            out[k + 1] = starts
        for k in lay.values:
            out[k] = np.concatenate([r[k] for _, r in results])
            if any(r[k + 1].size for _, r in results):  # some piece has nulls: every row gets a flag
                out[k + 1] = np.concatenate([r[k + 1] if r[k + 1].size else np.ones(r[k].size, np.bool_)
                                             for _, r in results])
            else:
                out[k + 1] = _EMPTY_VALID
        for j in range(self._ids.size):
            out += [before[j], after[j]]
        return tuple(out)
