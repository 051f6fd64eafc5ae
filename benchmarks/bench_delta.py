"""DeltaSink against ``deltalake.write_deltalake`` alone, on the standard events (5 M rows, 32 bytes each).

Both write the same Arrow table into a new local Delta table. The sink gets
it as 65,536-row batches, stages them as Parquet files in the table
directory when the epoch pre-commits and adds those files in one Delta
commit; ``write_deltalake`` writes and commits in one call. Neither
compresses differently: both use Parquet's defaults for their writer.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

import laminar_jit as lj

from . import common


class DeltaWrite:
    """Rows into a new Delta table: :class:`laminar_jit.io.DeltaSink` vs ``deltalake.write_deltalake``."""

    timeout = 300

    def setup(self):
        import deltalake

        self.write_deltalake = deltalake.write_deltalake
        self.table = common.event_table(common.n_events())
        self.batches = self.table.to_batches(max_chunksize=65_536)
        self.root = Path(tempfile.mkdtemp(prefix="lj-delta-bench-"))
        self.counter = itertools.count()

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def _fresh(self) -> Path:
        return self.root / f"t{next(self.counter)}"

    def time_delta_sink(self):
        sink = lj.io.DeltaSink(self._fresh())
        sink.open(self.table.schema, None)
        for batch in self.batches:
            sink.write(batch, 1)
        sink.pre_commit(1)
        sink.commit(1)

    def time_write_deltalake(self):
        self.write_deltalake(str(self._fresh()), self.table)

    def track_sink_rows_per_second(self):
        """Rows/s of :meth:`time_delta_sink` (one timed run)."""
        import time

        t0 = time.perf_counter()
        self.time_delta_sink()
        return self.table.num_rows / (time.perf_counter() - t0)

    track_sink_rows_per_second.unit = "rows/s"
