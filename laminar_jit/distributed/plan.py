"""Cut a DAG at its exchange: a reader part per source shard, a keyed part per partition.

The *reader part* is every source and every stateless operator whose inputs
are all in the reader part (filters, maps and projections next to the data);
it runs beside the reader of each source shard. Its outputs that feed the
rest of the DAG are the *exchange streams*: each is hash-partitioned by a key
and shipped to the partition that owns the key. The *partition part* is
everything else; in it, each exchange stream becomes a source of the same
name, schema and event-time column whose watermark comes from the readers
(the minimum over all of them), not from the rows. Only the columns the
partition part reads cross: when every consumer of a stream is a window
(which reads its event time, keys and aggregated columns), the reader part
projects the stream onto those first, as node ``<stream>@columns``.

Key partitioning is only correct when every stateful operator after the
exchange groups rows by (a superset of) the key the rows were partitioned
by; :func:`split_dag` checks that along every path and otherwise raises
:class:`~laminar_jit.errors.PartitioningError` naming the operator.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from ..dag.builder import DagBuilder
from ..dag.graph import StreamingDag
from ..errors import PartitioningError
from ..ops.stateless import Project
from ..ops.windows import WindowSpec

__all__ = ["Exchange", "SplitPlan", "split_dag"]

EXCHANGE_SINK = "{}@exchange"
#: Name of the reader-part projection that drops the columns no consumer after the exchange reads.
COLUMNS_NODE = "{}@columns"


@dataclass(frozen=True)
class Exchange:
    """One stream crossing the exchange.

    Attributes
    ----------
    node : str
        The reader-part node whose output is shipped (a source or a stateless
        operator); also the name of the partition part's source.
    sink : str
        Name of the reader part's sink that collects the stream.
    keys : tuple of str
        Columns whose hash picks a row's partition (empty: one partition).
    schema : pyarrow.Schema
    event_time : str or None
    """

    node: str
    sink: str
    keys: tuple[str, ...]
    schema: pa.Schema
    event_time: str | None


@dataclass(frozen=True)
class SplitPlan:
    """A DAG cut at its exchange (see the module docstring)."""

    dag: StreamingDag
    reader: StreamingDag
    partition: StreamingDag
    exchanges: tuple[Exchange, ...]
    #: Sinks of the original DAG filled by the reader part / the partition part.
    reader_sinks: tuple[str, ...]
    partition_sinks: tuple[str, ...]
    #: Per stateful operator of the partition part (with ``partitions > 1``): the columns of its input (a
    #: join's left input) that pick the partition of its rows, in the order the exchange hashes them.
    node_keys: dict


def port_keys(op, port: str | None) -> tuple[str, ...]:
    """Key columns an operator groups the rows of one input port by (() when unkeyed)."""
    if port == "left":
        return tuple(op.left_keys)
    if port == "right":
        return tuple(op.right_keys)
    return tuple(getattr(op, "keys", ()))


def split_dag(dag: StreamingDag, partitions: int) -> SplitPlan:
    """Cut ``dag`` into its reader and partition parts.

    Raises
    ------
    PartitioningError
        With ``partitions > 1``: a stateful operator has no key, or groups
        rows by columns other than the ones they were partitioned by, or the
        DAG has no stateful operator at all (nothing to partition).
    """
    nodes = dag.nodes
    reader_ids: set[int] = set()
    for i in dag.execution_ids:
        n = nodes[i]
        if n.kind == "source" or (n.kind == "stateless" and all(u in reader_ids for u, _ in n.inputs)):
            reader_ids.add(i)
    part_ids = [i for i in dag.execution_ids if i not in reader_ids and nodes[i].kind != "sink"]
    if not part_ids:
        raise PartitioningError(
            "the DAG has no stateful operator, so there is nothing to partition by key; run it in one "
            "process with lj.run(dag, ...) (without partitions=), or DagExecutor(dag, threads=N)")

    # consumers of each exchange stream: (consumer node, port)
    consumers: dict[int, list] = {}
    for i in part_ids:
        for u, port in nodes[i].inputs:
            if u in reader_ids:
                consumers.setdefault(u, []).append((nodes[i], port))
    exchanges = []
    part_keys: dict[int, tuple[str, ...] | None] = {}
    shipped: dict[int, str] = {}  # exchange stream -> the reader-part node whose rows cross
    pruned: dict[int, list[str]] = {}
    for u in sorted(consumers, key=dag.execution_ids.index):
        keys = _exchange_keys(nodes[u].name, consumers[u], partitions)
        part_keys[u] = keys
        shipped[u], schema = nodes[u].name, nodes[u].schema
        keep = _columns_read(consumers[u], schema)
        if keep is not None and len(keep) < len(schema):
            pruned[u] = keep
            shipped[u], schema = COLUMNS_NODE.format(nodes[u].name), pa.schema([schema.field(c) for c in keep])
        exchanges.append(Exchange(shipped[u], EXCHANGE_SINK.format(shipped[u]), keys, schema, nodes[u].event_time))
    node_keys: dict[str, tuple[str, ...]] = {}
    if partitions > 1:
        _check_lineage(dag, part_ids, part_keys, node_keys)

    reader = DagBuilder()
    part = DagBuilder()
    for i in dag.execution_ids:
        n = nodes[i]
        if i in reader_ids:
            if n.kind == "source":
                spec = n.op
                reader.source(n.name, spec.schema, spec.event_time, spec.watermark, spec.idle_timeout)
            else:
                reader.operator(n.name, n.op)
                for u, port in n.inputs:
                    reader.connect(nodes[u].name, n.name, port)
    for u, keep in pruned.items():
        reader.operator(shipped[u], Project(keep))
        reader.connect(nodes[u].name, shipped[u])
    for x in exchanges:
        reader.sink_for(x.node, x.sink)
        part.source(x.node, x.schema, event_time=x.event_time)
    for i in part_ids:
        n = nodes[i]
        part.operator(n.name, n.op)
        for u, port in n.inputs:
            part.connect(shipped.get(u, nodes[u].name), n.name, port)
    reader_sinks, partition_sinks = [], []
    for n in nodes:
        if n.kind != "sink":
            continue
        (u, port), = n.inputs
        if port is not None:  # a late-row side output: the operator declares it again
            partition_sinks.append(n.name)
        elif u in reader_ids:
            reader.sink_for(nodes[u].name, n.name)
            reader_sinks.append(n.name)
        else:
            part.sink_for(nodes[u].name, n.name)
            partition_sinks.append(n.name)
    return SplitPlan(dag, reader.build(), part.build(), tuple(exchanges), tuple(reader_sinks),
                     tuple(partition_sinks), node_keys)


def _columns_read(consumers: list, schema: pa.Schema) -> list[str] | None:
    """The columns of an exchange stream its consumers read, in stream order; None when they need every one.

    Windows (that drop their late rows) read the event time, the keys and
    the aggregated columns; other operators pass rows on, so they get all.
    """
    read: set[str] = set()
    for c, _ in consumers:
        spec = c.bound.spec
        if not (isinstance(spec, WindowSpec) and spec.aggregating and spec.late == "drop"):
            return None
        read.update((spec.event_time, *spec.keys, *c.bound.reads))
    return [name for name in schema.names if name in read]


def _exchange_keys(stream: str, consumers: list, partitions: int) -> tuple[str, ...]:
    """The partition key of one exchange stream, agreed by all its consumers."""
    joins = [(c, p) for c, p in consumers if p in ("left", "right")]
    candidates = [port_keys(c.op, p) if c.kind == "stateful" else () for c, p in consumers]
    if joins:
        keys = port_keys(joins[0][0].op, joins[0][1])
    else:
        first = candidates[0]
        common = set(first).intersection(*map(set, candidates[1:]))
        keys = tuple(k for k in first if k in common)
    if partitions == 1:
        return keys
    for (c, p), cand in zip(consumers, candidates):
        if c.kind != "stateful":
            raise PartitioningError(
                f"stream {stream!r} feeds {c.name!r}, a stateless operator that also reads a stateful "
                "operator's output; with partitions > 1 the engine cannot tell which key to partition it "
                "by. Move the union after the stateful operators, or run with partitions=1")
        if not cand:
            raise PartitioningError(
                f"operator {c.name!r} ({c.op.label()}) has no key, so its state cannot be split across "
                f"partitions; give it key=... or run with partitions=1")
        ok = cand == keys if p in ("left", "right") else set(keys) <= set(cand)
        if not ok or not keys:
            raise PartitioningError(
                f"stream {stream!r} must be partitioned by one key for all its consumers, but "
                f"{c.name!r} groups it by {list(cand)} and the others by {list(keys)}; use one key or run "
                "with partitions=1")
    return keys


def _check_lineage(dag: StreamingDag, part_ids: list[int], part_keys: dict, node_keys: dict) -> None:
    """Every stateful operator after the exchange must group by the columns rows were partitioned by.

    Fills ``node_keys``: each stateful operator's partitioning columns (see :attr:`SplitPlan.node_keys`).
    """
    nodes = dag.nodes
    for i in part_ids:
        n = nodes[i]
        by_port: dict = {}
        for u, port in n.inputs:
            by_port.setdefault(port, set()).add(part_keys.get(u))
        if n.kind == "stateful":
            for port, seen in by_port.items():
                want = port_keys(n.op, port)
                (have,) = seen if len(seen) == 1 else (None,)
                ok = have is not None and (have == want if port in ("left", "right") else set(have) <= set(want))
                if not ok:
                    raise PartitioningError(
                        f"operator {n.name!r} ({n.op.label()}) groups rows by {list(want) or 'nothing'}, "
                        f"but its input is partitioned by {_describe(seen)}; with partitions > 1 every "
                        "stateful operator must group by the exchange key (or a superset of it). Key it "
                        "by those columns or run with partitions=1")
            main = by_port.get("left", by_port.get(None))
            (have,) = main if main is not None and len(main) == 1 else (None,)
            node_keys[n.name] = have
        else:
            (have,) = by_port[None] if len(by_port[None]) == 1 else (None,)
            if have is not None:
                mapping = n.bound.mapping
                if mapping is not None:
                    old_to_new = {old: new for new, old in mapping}
                    have = tuple(old_to_new.get(k) for k in have)
                    have = None if None in have else have
                elif any(name in have for name, _ in n.bound.writes):
                    have = None
        if have is not None and not all(k in n.schema.names for k in have):
            have = None
        part_keys[i] = have


def _describe(seen: set) -> str:
    keys = [list(k) for k in seen if k is not None]
    if None in seen:
        return "columns it no longer carries" if not keys else f"{keys} and columns it no longer carries"
    return " and ".join(map(str, keys))
