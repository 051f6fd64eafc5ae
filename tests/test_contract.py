"""The public-contract example (DESIGN.md / README quickstart) runs as written."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import laminar_jit as lj


def test_contract_example():
    bids = pa.schema([("ts", pa.int64()), ("auction", pa.int64()),
                      ("bidder", pa.int64()), ("price", pa.float64())])
    dag = (
        lj.DagBuilder()
        .source("bids", bids, event_time="ts",
                watermark=lj.BoundedOutOfOrderness(max_delay=5_000))
        .operator("expensive", lj.Filter(lambda price: price > 100.0))
        .operator("eur", lj.Map(lambda price: price * 0.908, output="price_eur"))
        .operator("per_auction", lj.TumblingWindow(
            size=60_000, key="auction",
            aggs={"n": lj.count(), "max_eur": lj.max("price_eur")}))
        .connect("bids", "expensive")
        .connect("expensive", "eur")
        .connect("eur", "per_auction")
        .sink_for("per_auction", "out")
        .build()
    )
    rng = np.random.default_rng(0)
    n = 10_000
    batch = pa.record_batch({"ts": np.arange(n) * 30, "auction": rng.integers(0, 5, n),
                             "bidder": rng.integers(0, 100, n), "price": rng.uniform(0, 200, n)}, schema=bids)
    ex = lj.DagExecutor(dag)
    ex.process_batch("bids", batch)
    ex.finish()
    table = ex.take_sink_outputs("out")
    assert table.column_names == ["window_start", "window_end", "auction", "n", "max_eur"]
    prices = batch.column("price").to_numpy()
    assert table.column("n").to_numpy().sum() == int((prices > 100.0).sum())
    start = table.column("window_start").to_numpy()
    assert (start % 60_000 == 0).all() and np.all(np.diff(table.column("window_end").to_numpy()) >= 0)
    assert np.isclose(table.column("max_eur").to_numpy().max(), prices.max() * 0.908)
    m = ex.metrics
    assert m.events_in == n and m.batches == 1 and m.late_events == 0


def test_cli_demo_and_bad_arguments():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "laminar_jit.cli", "demo", "--events", "20000", "--rows", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "eur_sink" in done.stdout and "M events/s" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "laminar_jit.cli", "demo", "--events", "-5"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "positive" in bad.stderr
