"""DAG building, validation, schema propagation, routing and fingerprints.

Only ``DagBuilder.build()`` runs here (it compiles each user kernel once with
Numba to check it and infer its return type); no ``DagExecutor`` is created,
so no plan is compiled. Executor behaviour is tested elsewhere.

Kernels used by many tests are module-level :class:`lj.Kernel` objects: a
Kernel keeps its Numba dispatcher, so each one compiles once per dtype for the
whole module instead of once per test.
"""

from __future__ import annotations

import datetime
import enum
import re
import sys
import types

import numba
import numpy as np
import pyarrow as pa
import pytest

import laminar_jit as lj
from laminar_jit._jit import JIT_DISABLED
from laminar_jit.dag import MAX_FAN_OUT
from laminar_jit.ops.base import Bound, Operator

# --------------------------------------------------------------------------- fixtures

BIDS = pa.schema([
    ("ts", pa.int64()),
    ("auction", pa.int64()),
    ("price", pa.float64()),
    ("qty", pa.int64()),
    ("sym", pa.string()),
])

OTHER = pa.schema([("ts", pa.int64()), ("price", pa.float64())])

EXPENSIVE = lj.kernel(lambda price: price > 100.0, name="expensive")
CHEAP = lj.kernel(lambda price: price <= 100.0, name="cheap")
POSITIVE_QTY = lj.kernel(lambda qty: qty > 0, name="positive_qty")


@lj.kernel
def notional(price, qty):
    return price * qty


@lj.kernel(name="big_order")
def big_order(price, qty):
    return price * qty > 10_000.0


#: Tests about Numba itself (its typing errors, dispatchers); the rest of the module
#: also runs under NUMBA_DISABLE_JIT=1, where kernels are inferred by calling them.
requires_jit = pytest.mark.skipif(JIT_DISABLED, reason="needs Numba's JIT (NUMBA_DISABLE_JIT=1)")


def _filter(k=EXPENSIVE):
    return lj.Filter(k)


def _builder(**kw):
    return lj.DagBuilder(**kw).source("bids", BIDS, event_time="ts")


def _linear():
    """bids -> expensive -> with_notional -> out."""
    return (
        _builder()
        .operator("expensive", lj.Filter(EXPENSIVE))
        .operator("with_notional", lj.Map(notional, output="notional"))
        .connect("bids", "expensive")
        .connect("expensive", "with_notional")
        .sink_for("with_notional", "out")
        .build()
    )


def _as_int_array(values):
    return np.asarray(values, dtype=np.int32)


def _assert_routing(dag, offsets, targets):
    r = dag.routing
    assert r.offsets.dtype == np.int32
    assert r.targets.dtype == np.int32
    assert r.offsets.shape == (len(dag.nodes) + 1,)
    np.testing.assert_array_equal(r.offsets, _as_int_array(offsets))
    np.testing.assert_array_equal(r.targets, _as_int_array(targets))


# --------------------------------------------------------------------------- error hierarchy

@pytest.mark.parametrize("cls", [
    lj.CycleError, lj.UnknownNodeError, lj.DuplicateNodeError, lj.SchemaError,
    lj.FanOutError, lj.EmptyDagError, lj.DisconnectedNodeError, lj.PortError,
])
def test_dag_errors_are_dag_errors(cls):
    assert issubclass(cls, lj.DagError)
    assert issubclass(cls, lj.LaminarError)


def test_kernel_and_data_errors_are_not_dag_errors():
    assert issubclass(lj.KernelError, lj.LaminarError)
    assert not issubclass(lj.KernelError, lj.DagError)
    assert not issubclass(lj.DataError, lj.DagError)


# --------------------------------------------------------------------------- EmptyDagError

def test_empty_builder_raises_empty_dag_error():
    with pytest.raises(lj.EmptyDagError, match="empty") as info:
        lj.DagBuilder().build()
    assert isinstance(info.value, lj.DagError)


def test_only_sink_declarations_is_still_empty():
    with pytest.raises(lj.EmptyDagError):
        lj.DagBuilder().sink_for("x", "out").build()


def test_dag_without_source_raises_empty_dag_error():
    b = lj.DagBuilder().operator("expensive", _filter()).sink_for("expensive", "out")
    with pytest.raises(lj.EmptyDagError, match="no source") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)


# --------------------------------------------------------------------------- DuplicateNodeError

def test_two_operators_with_one_name():
    b = (_builder().operator("f", _filter()).operator("f", lj.Filter(CHEAP))
         .connect("bids", "f").sink_for("f", "out"))
    with pytest.raises(lj.DuplicateNodeError, match="'f'") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)


def test_operator_and_sink_with_one_name():
    b = _builder().operator("f", _filter()).connect("bids", "f").sink_for("f", "f")
    with pytest.raises(lj.DuplicateNodeError, match=r"'f'.*stateless and sink"):
        b.build()


def test_source_and_operator_with_one_name():
    b = _builder().operator("bids", _filter()).connect("bids", "bids").sink_for("bids", "out")
    with pytest.raises(lj.DuplicateNodeError, match=r"'bids'.*source and stateless"):
        b.build()


def test_two_sinks_with_one_name():
    b = (_builder().operator("f", _filter()).connect("bids", "f")
         .sink_for("f", "out").sink_for("bids", "out"))
    with pytest.raises(lj.DuplicateNodeError, match="'out'"):
        b.build()


@pytest.mark.parametrize("name", ["", None, 3])
def test_node_names_must_be_non_empty_strings(name):
    with pytest.raises(lj.DagError, match="non-empty strings"):
        lj.DagBuilder().source(name, BIDS).sink_for(name, "out").build()


# --------------------------------------------------------------------------- UnknownNodeError

def test_connect_to_unknown_node():
    b = _builder().operator("f", _filter()).connect("bids", "f").connect("f", "nope").sink_for("f", "out")
    with pytest.raises(lj.UnknownNodeError, match="'nope'") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)
    assert "connect('f', 'nope')" in str(info.value)


def test_connect_from_unknown_node():
    b = _builder().operator("f", _filter()).connect("ghost", "f").sink_for("f", "out")
    with pytest.raises(lj.UnknownNodeError, match="'ghost'"):
        b.build()


def test_sink_for_unknown_node():
    b = _builder().operator("f", _filter()).connect("bids", "f").sink_for("f", "out").sink_for("nope", "out2")
    with pytest.raises(lj.UnknownNodeError, match="'nope'") as info:
        b.build()
    assert "sink_for('nope', 'out2')" in str(info.value)


def test_lookup_of_unknown_node_on_built_dag():
    dag = _linear()
    with pytest.raises(lj.UnknownNodeError, match="'nope'") as info:
        dag.node("nope")
    assert isinstance(info.value, lj.DagError)
    for call in (dag.schema_of, dag.targets_of, dag.is_multicast, dag.is_terminal,
                 dag.reachable_from, dag.upstreams_of):
        with pytest.raises(lj.UnknownNodeError, match="'nope'"):
            call("nope")


@pytest.mark.parametrize("bad_id", [-1, 4, 100])
def test_lookup_of_out_of_range_id(bad_id):
    dag = _linear()  # 4 nodes: ids 0..3
    with pytest.raises(lj.UnknownNodeError):
        dag.node(bad_id)


def test_lookup_by_name_and_by_id_agree():
    dag = _linear()
    for i, name in enumerate(["bids", "expensive", "with_notional", "out"]):
        assert dag.node(name).id == i
        assert dag.node(i).name == name


def test_lookup_by_numpy_integer_id():
    dag = _linear()
    first_target = dag.routing.targets_of(dag.node("bids").id)[0]  # np.int32
    assert dag.node(first_target).name == "expensive"
    assert dag.is_multicast(np.int32(0)) is False


# --------------------------------------------------------------------------- other DagErrors

def test_connect_into_a_source_is_rejected():
    b = _builder().source("other", OTHER).connect("bids", "other").sink_for("other", "out").sink_for("bids", "o2")
    with pytest.raises(lj.DagError, match="'other' is a source"):
        b.build()


def test_connect_to_or_from_a_sink_is_rejected():
    b = _builder().operator("f", _filter()).connect("bids", "f").sink_for("f", "out").connect("f", "out")
    with pytest.raises(lj.DagError, match="sink_for"):
        b.build()
    b = _builder().operator("f", _filter()).sink_for("bids", "out").connect("out", "f").sink_for("f", "o2")
    with pytest.raises(lj.DagError, match="sink_for"):
        b.build()


def test_sink_for_a_sink_is_rejected():
    b = _builder().sink_for("bids", "out").sink_for("out", "out2")
    with pytest.raises(lj.DagError, match="'out' is itself a sink"):
        b.build()


def test_duplicate_connection_is_rejected():
    b = _builder().operator("f", _filter()).connect("bids", "f").connect("bids", "f").sink_for("f", "out")
    with pytest.raises(lj.DagError, match=r"connect\('bids', 'f'\) is given twice"):
        b.build()


def test_operator_must_be_an_operator_instance():
    with pytest.raises(TypeError, match="'x'.*str"):
        lj.DagBuilder().operator("x", "not an op")
    with pytest.raises(TypeError, match="'x'"):
        lj.DagBuilder().operator("x", lambda price: price > 1.0)


def test_source_schema_must_be_a_pyarrow_schema():
    with pytest.raises(TypeError, match="'bids'.*pyarrow.Schema"):
        lj.DagBuilder().source("bids", {"ts": pa.int64()})


# --------------------------------------------------------------------------- CycleError

def _cycle_from_message(message):
    m = re.search(r"cycle: (.*?);", message)
    assert m, message
    return m.group(1).split(" -> ")


def _assert_is_cycle(names, expected_members, dag_edges):
    assert names[0] == names[-1], names
    assert set(names[:-1]) == set(expected_members)
    assert len(names[:-1]) == len(expected_members)
    for a, b in zip(names, names[1:]):
        assert (a, b) in dag_edges


def test_cycle_error_lists_the_nodes_on_the_cycle():
    b = _builder()
    for name in ("a", "b", "c", "d"):
        b.operator(name, _filter())
    edges = [("bids", "a"), ("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]
    for up, down in edges:
        b.connect(up, down)
    b.sink_for("d", "out")
    with pytest.raises(lj.CycleError) as info:
        b.build()
    assert isinstance(info.value, lj.DagError)
    names = _cycle_from_message(str(info.value))
    _assert_is_cycle(names, {"a", "b", "c"}, set(edges))
    assert names == ["a", "b", "c", "a"]  # starts at the smallest id on the cycle
    # the tail (d, out) and the source are not on the cycle
    assert "d" not in names and "out" not in names and "bids" not in names


def test_cycle_error_for_a_cycle_declared_out_of_order():
    # ids: d0 c1 bids2 b3 a4; the cycle is c -> b -> a -> c; d hangs off the cycle
    b = lj.DagBuilder()
    b.operator("d", _filter()).operator("c", _filter()).source("bids", BIDS)
    b.operator("b", _filter()).operator("a", _filter())
    edges = [("bids", "a"), ("a", "c"), ("c", "b"), ("b", "a"), ("b", "d")]
    for up, down in edges:
        b.connect(up, down)
    b.sink_for("d", "out")
    with pytest.raises(lj.CycleError) as info:
        b.build()
    _assert_is_cycle(_cycle_from_message(str(info.value)), {"a", "b", "c"}, set(edges))


def test_self_loop_is_a_cycle():
    b = _builder().operator("a", _filter()).connect("bids", "a").connect("a", "a").sink_for("a", "out")
    with pytest.raises(lj.CycleError, match="a -> a"):
        b.build()


def test_cycle_without_outside_input():
    b = _builder().operator("x", _filter()).operator("p", _filter()).operator("q", _filter())
    edges = [("bids", "x"), ("p", "q"), ("q", "p")]
    for up, down in edges:
        b.connect(up, down)
    b.sink_for("x", "out").sink_for("q", "out_q")
    with pytest.raises(lj.CycleError) as info:
        b.build()
    _assert_is_cycle(_cycle_from_message(str(info.value)), {"p", "q"}, set(edges))


# --------------------------------------------------------------------------- DisconnectedNodeError

def test_operator_without_input():
    b = (_builder().operator("f", _filter()).operator("lonely", lj.Filter(CHEAP))
         .connect("bids", "f").sink_for("f", "out").sink_for("lonely", "out2"))
    with pytest.raises(lj.DisconnectedNodeError, match="operator 'lonely' has no input") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)


def test_operator_without_path_to_a_sink():
    b = (_builder().operator("f", _filter()).operator("dead_end", lj.Filter(CHEAP))
         .connect("bids", "f").connect("bids", "dead_end").sink_for("f", "out"))
    with pytest.raises(lj.DisconnectedNodeError, match="'dead_end' leads to no sink") as info:
        b.build()
    assert "'f'" not in str(info.value)


def test_operator_whose_downstream_is_a_dead_end():
    # f -> g, and g has no sink: f's output is lost too; the first node named is f (smaller id)
    b = (_builder().operator("f", _filter()).operator("g", lj.Filter(CHEAP))
         .connect("bids", "f").connect("f", "g").sink_for("bids", "raw"))
    with pytest.raises(lj.DisconnectedNodeError, match="operator 'f' leads to no sink"):
        b.build()


def test_source_without_sink():
    b = _builder().operator("f", _filter()).connect("bids", "f")
    with pytest.raises(lj.DisconnectedNodeError, match="source 'bids' leads to no sink"):
        b.build()


def test_source_straight_to_sink_is_valid():
    dag = _builder().sink_for("bids", "out").build()
    assert dag.execution_order == ["bids", "out"]
    assert dag.schema_of("out") == BIDS
    _assert_routing(dag, [0, 1, 1], [1])


# --------------------------------------------------------------------------- FanOutError

def _fan_out(n_targets, **kw):
    b = _builder(**kw)
    for i in range(n_targets):
        b.sink_for("bids", f"out{i}")
    return b


def test_default_fan_out_limit_is_eight():
    assert MAX_FAN_OUT == 8
    assert lj.DagBuilder().max_fan_out == 8
    dag = _fan_out(8).build()
    assert dag.targets_of("bids") == [f"out{i}" for i in range(8)]


def test_more_than_eight_targets_is_a_fan_out_error():
    with pytest.raises(lj.FanOutError, match=r"'bids' routes to 9 targets.*limit of 8") as info:
        _fan_out(9).build()
    assert isinstance(info.value, lj.DagError)
    assert "max_fan_out" in str(info.value)


def test_fan_out_counts_operators_and_sinks_of_an_operator():
    b = _builder().operator("f", _filter()).connect("bids", "f")
    for i in range(5):
        b.operator(f"g{i}", lj.Filter(CHEAP)).connect("f", f"g{i}").sink_for(f"g{i}", f"out{i}")
    for i in range(4):
        b.sink_for("f", f"raw{i}")
    with pytest.raises(lj.FanOutError, match="'f' routes to 9 targets"):
        b.build()


def test_max_fan_out_can_be_raised():
    dag = _fan_out(9, max_fan_out=16).build()
    assert len(dag.targets_of("bids")) == 9
    assert dag.is_multicast("bids")
    dag = _fan_out(16, max_fan_out=16).build()
    assert len(dag.targets_of("bids")) == 16
    with pytest.raises(lj.FanOutError, match="17 targets.*limit of 16"):
        _fan_out(17, max_fan_out=16).build()


# --------------------------------------------------------------------------- PortError and ports

class _TwoInput(Operator):
    """A stand-in for a join: two named ports, fixed output schema."""

    ports = ("left", "right")

    def bind(self, node, *args, **kwargs):
        return Bound(node, self, pa.schema([]), pa.schema([("ts", pa.int64())]))

    def fingerprint(self):
        return "TwoInput"

    def label(self):
        return "TwoInput"


def test_port_on_a_single_input_operator():
    b = _builder().operator("f", _filter()).connect("bids", "f", port="left").sink_for("f", "out")
    with pytest.raises(lj.PortError, match=r"connect\('bids', 'f', port='left'\).*'f' has a single input") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)


def test_two_input_operator_needs_a_known_port():
    b = (_builder().source("other", OTHER).operator("j", _TwoInput())
         .connect("bids", "j").connect("other", "j", port="right").sink_for("j", "out"))
    with pytest.raises(lj.PortError, match=r"'j' has ports 'left', 'right'"):
        b.build()
    b = (_builder().source("other", OTHER).operator("j", _TwoInput())
         .connect("bids", "j", port="middle").connect("other", "j", port="right").sink_for("j", "out"))
    with pytest.raises(lj.PortError, match="port='middle'"):
        b.build()


def test_two_input_operator_accepts_different_schemas_per_port():
    dag = (_builder().source("other", OTHER).operator("j", _TwoInput())
           .connect("bids", "j", port="left").connect("other", "j", port="right")
           .sink_for("j", "out").build())
    assert dag.upstreams_of("j") == ["bids", "other"]


def test_two_input_operator_with_an_unconnected_port():
    b = (_builder().operator("j", _TwoInput())
         .connect("bids", "j", port="left").sink_for("j", "out"))
    with pytest.raises((lj.PortError, lj.DisconnectedNodeError), match="'j'.*right|right.*'j'"):
        b.build()


# --------------------------------------------------------------------------- SchemaError

def test_kernel_parameter_naming_a_missing_column():
    b = (_builder().operator("by_size", lj.Filter(lambda size: size > 3))
         .connect("bids", "by_size").sink_for("by_size", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'by_size'.*'size' is not a column") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)
    assert "price" in str(info.value)  # lists the available columns


def test_kernel_reading_a_string_column():
    b = (_builder().operator("by_sym", lj.Filter(lambda sym: sym == "X"))
         .connect("bids", "by_sym").sink_for("by_sym", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'by_sym'.*'sym' is string"):
        b.build()


@pytest.mark.parametrize("arrow_type", [pa.float16(), pa.dictionary(pa.int32(), pa.string()),
                                        pa.list_(pa.int64()), pa.binary()])
def test_kernel_reading_an_unreadable_column(arrow_type):
    schema = pa.schema([("ts", pa.int64()), ("v", arrow_type)])
    b = (lj.DagBuilder().source("s", schema).operator("f", lj.Filter(lambda v: v > 0))
         .connect("s", "f").sink_for("f", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'f'.*'v'"):
        b.build()


def test_kernel_reading_a_later_map_output_must_be_downstream():
    # "notional" exists only downstream of the Map; a Filter on the source cannot read it
    b = (_builder().operator("big", lj.Filter(lambda notional: notional > 1.0))
         .connect("bids", "big").sink_for("big", "out"))
    with pytest.raises(lj.SchemaError, match="'notional'"):
        b.build()


def test_union_of_upstreams_with_different_schemas():
    b = (_builder().source("other", OTHER).operator("u", _filter())
         .connect("bids", "u").connect("other", "u").sink_for("u", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'u'.*'bids' and 'other' differ") as info:
        b.build()
    assert "columns" in str(info.value)


def test_union_of_upstreams_differing_in_one_column_type():
    narrow = pa.schema([("ts", pa.int64()), ("price", pa.float32())])
    b = (lj.DagBuilder().source("a", OTHER).source("b", narrow).operator("u", _filter())
         .connect("a", "u").connect("b", "u").sink_for("u", "out"))
    with pytest.raises(lj.SchemaError, match="column 'price' is double vs float"):
        b.build()


def test_union_of_upstreams_with_one_schema():
    dag = (lj.DagBuilder().source("a", OTHER).source("b", OTHER).operator("u", _filter())
           .connect("a", "u").connect("b", "u").sink_for("u", "out").build())
    assert dag.schema_of("u") == OTHER
    assert dag.upstreams_of("u") == ["a", "b"]


def test_project_of_a_missing_column():
    b = (_builder().operator("p", lj.Project(["ts", "volume"]))
         .connect("bids", "p").sink_for("p", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'p' \\(Project\\): column 'volume'"):
        b.build()


def test_event_time_column_missing():
    b = lj.DagBuilder().source("bids", BIDS, event_time="time").sink_for("bids", "out")
    with pytest.raises(lj.SchemaError, match="source 'bids': event_time column 'time' is not in the schema") as info:
        b.build()
    assert isinstance(info.value, lj.DagError)


@pytest.mark.parametrize("arrow_type", [pa.float64(), pa.int32(), pa.string()])
def test_event_time_column_of_wrong_type(arrow_type):
    schema = pa.schema([("ts", arrow_type), ("price", pa.float64())])
    b = lj.DagBuilder().source("bids", schema, event_time="ts").sink_for("bids", "out")
    with pytest.raises(lj.SchemaError, match=f"source 'bids': event_time column 'ts' is {arrow_type}"):
        b.build()


@pytest.mark.parametrize("arrow_type", [pa.int64(), pa.timestamp("ms"), pa.timestamp("ns", tz="UTC")])
def test_event_time_column_of_valid_type(arrow_type):
    schema = pa.schema([("ts", arrow_type), ("price", pa.float64())])
    dag = (lj.DagBuilder().source("bids", schema, event_time="ts", watermark=lj.Ascending())
           .sink_for("bids", "out").build())
    assert dag.node("bids").op.event_time == "ts"


def test_watermark_without_event_time():
    b = (lj.DagBuilder().source("bids", BIDS, watermark=lj.BoundedOutOfOrderness(max_delay=5_000))
         .sink_for("bids", "out"))
    with pytest.raises(lj.SchemaError, match="source 'bids': a watermark needs event_time="):
        b.build()


def test_watermark_of_wrong_type():
    b = lj.DagBuilder().source("bids", BIDS, event_time="ts", watermark=5_000).sink_for("bids", "out")
    with pytest.raises(lj.SchemaError, match="source 'bids': watermark must be"):
        b.build()


def test_timedelta_watermark_on_integer_event_time():
    b = (lj.DagBuilder()
         .source("bids", BIDS, event_time="ts",
                 watermark=lj.BoundedOutOfOrderness(max_delay=datetime.timedelta(seconds=5)))
         .sink_for("bids", "out"))
    with pytest.raises(lj.SchemaError, match="'bids'.*'ts'"):
        b.build()


def test_source_schema_with_repeated_column_names():
    schema = pa.schema([("ts", pa.int64()), ("price", pa.float64()), ("price", pa.float64())])
    b = lj.DagBuilder().source("bids", schema).sink_for("bids", "out")
    with pytest.raises(lj.SchemaError, match="source 'bids'.*repeated column names"):
        b.build()


def test_map_output_declared_as_a_non_numeric_type():
    b = (_builder().operator("m", lj.Map(lambda price: price, output={"label": pa.string()}))
         .connect("bids", "m").sink_for("m", "out"))
    with pytest.raises(lj.SchemaError, match="operator 'm' \\(Map\\): output 'label' declared as string"):
        b.build()


def test_map_output_declared_with_a_non_arrow_type():
    with pytest.raises((TypeError, lj.SchemaError), match="'x'"):
        (_builder().operator("m", lj.Map(lambda price: price, output={"x": "float32"}))
         .connect("bids", "m").sink_for("m", "out").build())


# --------------------------------------------------------------------------- KernelError

@requires_jit
def test_kernel_numba_cannot_compile_names_the_operator():
    b = (_builder().operator("broken", lj.Filter(lambda price: price.foo()))
         .connect("bids", "broken").sink_for("broken", "out"))
    with pytest.raises(lj.KernelError) as info:
        b.build()
    message = str(info.value)
    assert "operator 'broken'" in message
    assert "Filter" in message
    assert "price: float64" in message
    assert "foo" in message  # the cause from Numba
    assert isinstance(info.value.__cause__, numba.core.errors.NumbaError)


def test_map_kernel_numba_cannot_compile_names_the_operator():
    b = (_builder().operator("broken_map", lj.Map(lambda qty: qty.bar, output="x"))
         .connect("bids", "broken_map").sink_for("broken_map", "out"))
    with pytest.raises(lj.KernelError, match=r"operator 'broken_map' \(Map\)"):
        b.build()


def test_filter_returning_a_tuple():
    b = (_builder().operator("pair", lj.Filter(lambda price: (price > 1.0, price < 2.0)))
         .connect("bids", "pair").sink_for("pair", "out"))
    with pytest.raises(lj.KernelError, match=r"operator 'pair' \(Filter\).*expected a boolean"):
        b.build()


def test_filter_returning_nothing():
    def no_return(price):
        pass

    b = (_builder().operator("nothing", lj.Filter(no_return))
         .connect("bids", "nothing").sink_for("nothing", "out"))
    with pytest.raises(lj.KernelError, match="operator 'nothing'.*no_return returns"):
        b.build()


@pytest.mark.parametrize("fn, returned", [(lambda price: price * 2, "float64"), (lambda qty: qty % 2, "int64")])
def test_filter_returning_a_number_is_rejected(fn, returned):
    """A number used as truthiness is a predicate missing its comparison: rejected at build()."""
    b = _builder().operator("doubled", lj.Filter(fn)).connect("bids", "doubled").sink_for("doubled", "out")
    with pytest.raises(lj.KernelError, match=rf"operator 'doubled' \(Filter\).* returns {returned}, expected a boolean"):
        b.build()


def test_filter_comparing_a_number_is_accepted():
    dag = (_builder().operator("odd", lj.Filter(lambda qty: qty % 2 != 0))
           .connect("bids", "odd").sink_for("odd", "out").build())
    assert dag.schema_of("odd") == BIDS


def test_map_returning_two_values_for_one_output():
    b = (_builder().operator("two", lj.Map(lambda price: (price, price * 2.0), output="x"))
         .connect("bids", "two").sink_for("two", "out"))
    with pytest.raises(lj.KernelError, match=r"operator 'two' \(Map\).*returns 2 value\(s\) but 1 output"):
        b.build()


def test_map_returning_one_value_for_two_outputs():
    b = (_builder().operator("one", lj.Map(lambda price: price * 2.0, output=["x", "y"]))
         .connect("bids", "one").sink_for("one", "out"))
    with pytest.raises(lj.KernelError, match=r"operator 'one' \(Map\).*returns 1 value\(s\) but 2 output.*x, y"):
        b.build()


def test_map_declared_int64_output_from_float64_kernel():
    b = (_builder().operator("cast", lj.Map(lambda price: price * 2.0, output={"x": pa.int64()}))
         .connect("bids", "cast").sink_for("cast", "out"))
    with pytest.raises(lj.KernelError, match="operator 'cast' \\(Map\\): output 'x' declared int64 but kernel .* returns float64"):
        b.build()


def test_map_declared_bool_output_from_integer_kernel():
    b = (_builder().operator("flag", lj.Map(lambda qty: qty * 2, output={"f": pa.bool_()}))
         .connect("bids", "flag").sink_for("flag", "out"))
    with pytest.raises(lj.KernelError, match="output 'f' declared bool"):
        b.build()


def test_kernel_with_star_args_is_rejected_at_construction():
    with pytest.raises(lj.KernelError, match="not plain positional"):
        lj.Filter(lambda *cols: True)
    with pytest.raises(lj.KernelError, match="not plain positional"):
        lj.Map(lambda price, *, k: price, output="x")


def test_kernel_must_be_a_python_function():
    with pytest.raises(TypeError, match="Python function"):
        lj.Filter(abs)
    with pytest.raises(TypeError):
        lj.Filter("price > 100")


@requires_jit
def test_kernel_can_call_another_kernel():
    dag = (_builder().operator("m", lj.Map(lambda price, qty: notional(price, qty) + 1.0, output="n1"))
           .connect("bids", "m").sink_for("m", "out").build())
    assert dag.schema_of("m").field("n1").type == pa.float64()


# --------------------------------------------------------------------------- schema propagation

def test_map_appends_a_new_column():
    dag = (_builder().operator("eur", lj.Map(lambda price: price * 0.908, output="price_eur"))
           .connect("bids", "eur").sink_for("eur", "out").build())
    out = dag.schema_of("eur")
    assert out.names == BIDS.names + ["price_eur"]
    assert out.field("price_eur").type == pa.float64()
    for f in BIDS:
        assert out.field(f.name).type == f.type
    assert dag.schema_of("out") == out


def test_map_infers_integer_and_boolean_outputs():
    dag = (_builder()
           .operator("m", lj.Map(lambda qty, price: (qty * 2, price > 1.0), output=["q2", "pos"]))
           .connect("bids", "m").sink_for("m", "out").build())
    out = dag.schema_of("m")
    assert out.names[-2:] == ["q2", "pos"]
    assert out.field("q2").type == pa.int64()
    assert out.field("pos").type == pa.bool_()


def test_map_replaces_an_existing_column_in_place():
    dag = (_builder().operator("m", lj.Map(lambda qty: qty * 1.5, output="qty"))
           .connect("bids", "m").sink_for("m", "out").build())
    out = dag.schema_of("m")
    assert out.names == BIDS.names  # same columns, same positions
    assert out.field("qty").type == pa.float64()  # type follows the kernel
    assert out.get_field_index("qty") == BIDS.get_field_index("qty")


def test_map_replaces_and_appends_in_one_operator():
    dag = (_builder()
           .operator("m", lj.Map(lambda price, qty: (price * 2.0, price * qty), output=["price", "notional"]))
           .connect("bids", "m").sink_for("m", "out").build())
    out = dag.schema_of("m")
    assert out.names == BIDS.names + ["notional"]
    assert out.field("price").type == pa.float64()
    assert out.field("notional").type == pa.float64()
    writes = dict(dag.node("m").bound.writes)
    assert set(writes) == {"price", "notional"}


def test_map_with_declared_output_types():
    dag = (_builder()
           .operator("m", lj.Map(lambda price, qty: (price * qty, price > 100.0, qty + 1),
                                 output={"notional": pa.float32(), "big": pa.bool_(),
                                         "q": pa.int32()}))
           .connect("bids", "m").sink_for("m", "out").build())
    out = dag.schema_of("m")
    assert out.names == BIDS.names + ["notional", "big", "q"]
    assert out.field("notional").type == pa.float32()  # float64 kernel result, same-kind narrowing
    assert out.field("big").type == pa.bool_()
    assert out.field("q").type == pa.int32()


def test_map_declared_wider_type_from_narrower_kernel():
    dag = (_builder().operator("m", lj.Map(lambda qty: qty * 2, output={"q": pa.float64()}))
           .connect("bids", "m").sink_for("m", "out").build())
    assert dag.schema_of("m").field("q").type == pa.float64()


def test_map_chain_sees_upstream_outputs():
    dag = (_builder()
           .operator("n", lj.Map(notional, output="notional"))
           .operator("big", lj.Filter(lambda notional: notional > 10_000.0))
           .operator("half", lj.Map(lambda notional: notional / 2, output={"half": pa.float32()}))
           .connect("bids", "n").connect("n", "big").connect("big", "half")
           .sink_for("half", "out").build())
    assert dag.schema_of("big").names == BIDS.names + ["notional"]
    assert dag.schema_of("half").names == BIDS.names + ["notional", "half"]
    assert dag.node("big").bound.reads == ("notional",)
    assert dag.node("big").bound.read_dtypes == (np.dtype(np.float64),)


def test_map_output_validation_at_construction():
    with pytest.raises(ValueError, match="repeat"):
        lj.Map(lambda price: (price, price), output=["x", "x"])
    with pytest.raises(ValueError, match="at least one"):
        lj.Map(lambda price: price, output=[])


def test_kernel_reads_and_dtypes_follow_parameter_order():
    schema = pa.schema([("ts", pa.timestamp("ms")), ("n", pa.int32()), ("ok", pa.bool_()),
                        ("x", pa.float32())])
    dag = (lj.DagBuilder().source("s", schema, event_time="ts")
           .operator("f", lj.Filter(lambda x, ok, n, ts: ok and x > n and ts > 0))
           .connect("s", "f").sink_for("f", "out").build())
    bound = dag.node("f").bound
    assert bound.reads == ("x", "ok", "n", "ts")
    assert bound.read_dtypes == tuple(np.dtype(t) for t in (np.float32, np.bool_, np.int32, np.int64))
    assert bound.output_schema == schema


def test_project_selects_and_reorders():
    dag = (_builder().operator("p", lj.Project(["price", "ts"]))
           .connect("bids", "p").sink_for("p", "out").build())
    assert dag.schema_of("p") == pa.schema([("price", pa.float64()), ("ts", pa.int64())])
    assert dag.schema_of("out") == dag.schema_of("p")


def test_project_single_column_by_string():
    dag = (_builder().operator("p", lj.Project("sym"))
           .connect("bids", "p").sink_for("p", "out").build())
    assert dag.schema_of("p") == pa.schema([("sym", pa.string())])


def test_project_renames_and_keeps_field_properties():
    schema = pa.schema([pa.field("ts", pa.int64(), nullable=False), ("price", pa.float64())])
    dag = (lj.DagBuilder().source("s", schema)
           .operator("p", lj.Project({"px": "price", "t": "ts", "t2": "ts"}))
           .connect("s", "p").sink_for("p", "out").build())
    out = dag.schema_of("p")
    assert out.names == ["px", "t", "t2"]
    assert out.field("px").type == pa.float64()
    assert out.field("t").type == pa.int64()
    assert out.field("t").nullable is False  # carried over from "ts"
    assert out.field("px").nullable is True


def test_project_swaps_names():
    dag = (lj.DagBuilder().source("s", OTHER)
           .operator("p", lj.Project({"price": "ts", "ts": "price"}))
           .connect("s", "p").sink_for("p", "out").build())
    assert dag.schema_of("p") == pa.schema([("price", pa.int64()), ("ts", pa.float64())])


def test_project_validation_at_construction():
    with pytest.raises(ValueError, match="at least one"):
        lj.Project([])
    with pytest.raises(ValueError, match="repeat"):
        lj.Project(["ts", "ts"])


def test_schema_of_sources_operators_and_sinks():
    dag = (_builder().source("other", OTHER)
           .operator("f", _filter())
           .operator("m", lj.Map(notional, output="notional"))
           .operator("p", lj.Project({"t": "ts", "n": "notional"}))
           .connect("bids", "f").connect("f", "m").connect("m", "p")
           .sink_for("p", "out").sink_for("f", "filtered").sink_for("other", "raw")
           .build())
    assert dag.schema_of("bids") == BIDS
    assert dag.schema_of("other") == OTHER
    assert dag.schema_of("f") == BIDS
    assert dag.schema_of("m") == BIDS.append(pa.field("notional", pa.float64()))
    assert dag.schema_of("p") == pa.schema([("t", pa.int64()), ("n", pa.float64())])
    assert dag.schema_of("out") == dag.schema_of("p")
    assert dag.schema_of("filtered") == BIDS
    assert dag.schema_of("raw") == OTHER


# --------------------------------------------------------------------------- routing

def test_routing_linear():
    dag = _linear()
    # bids0 -> expensive1 -> with_notional2 -> out3
    _assert_routing(dag, [0, 1, 2, 3, 3], [1, 2, 3])
    assert dag.execution_order == ["bids", "expensive", "with_notional", "out"]
    assert dag.sources == ["bids"]
    assert dag.sinks == ["out"]
    assert [dag.is_multicast(n) for n in dag.execution_order] == [False] * 4
    assert [dag.is_terminal(n) for n in dag.execution_order] == [False, False, False, True]
    assert dag.targets_of("bids") == ["expensive"]
    assert dag.targets_of("out") == []
    assert dag.reachable_from("bids") == [0, 1, 2, 3]
    assert dag.upstreams_of("out") == ["with_notional"]
    assert dag.routing.n_nodes == 4
    assert [dag.routing.degree(i) for i in range(4)] == [1, 1, 1, 0]


def test_routing_fan_out_multicast():
    # targets are sorted by id whatever the order of connect() calls
    dag = (_builder().operator("a", _filter()).operator("b", lj.Filter(CHEAP))
           .operator("c", lj.Filter(POSITIVE_QTY))
           .connect("bids", "c").connect("bids", "a").connect("bids", "b")
           .sink_for("a", "out_a").sink_for("b", "out_b").sink_for("c", "out_c")
           .build())
    # bids0 a1 b2 c3 out_a4 out_b5 out_c6
    _assert_routing(dag, [0, 3, 4, 5, 6, 6, 6, 6], [1, 2, 3, 4, 5, 6])
    assert dag.is_multicast("bids")
    assert dag.is_multicast(0)
    assert not any(dag.is_multicast(n) for n in ("a", "b", "c", "out_a"))
    assert dag.targets_of("bids") == ["a", "b", "c"]
    assert list(dag.routing.targets_of(0)) == [1, 2, 3]
    assert [n for n in dag.execution_order if dag.is_terminal(n)] == ["out_a", "out_b", "out_c"]
    assert dag.execution_order == ["bids", "a", "b", "c", "out_a", "out_b", "out_c"]
    assert dag.sinks == ["out_a", "out_b", "out_c"]


def test_routing_operator_multicast_to_operator_and_sink():
    dag = (_builder().operator("f", _filter()).operator("m", lj.Map(notional, output="n"))
           .connect("bids", "f").connect("f", "m").sink_for("m", "out").sink_for("f", "audit")
           .build())
    # bids0 f1 m2 out3 audit4
    _assert_routing(dag, [0, 1, 3, 4, 4, 4], [1, 2, 4, 3])
    assert dag.is_multicast("f")
    assert dag.targets_of("f") == ["m", "audit"]
    assert dag.execution_order == ["bids", "f", "m", "out", "audit"]


def test_routing_diamond():
    dag = (_builder()
           .operator("left", _filter())
           .operator("right", lj.Filter(CHEAP))
           .operator("join", lj.Filter(POSITIVE_QTY))
           .connect("bids", "left").connect("bids", "right")
           .connect("left", "join").connect("right", "join")
           .sink_for("join", "out").build())
    # bids0 left1 right2 join3 out4
    _assert_routing(dag, [0, 2, 3, 4, 5, 5], [1, 2, 3, 3, 4])
    assert dag.execution_order == ["bids", "left", "right", "join", "out"]
    assert dag.upstreams_of("join") == ["left", "right"]
    assert dag.is_multicast("bids") and not dag.is_multicast("left")
    assert dag.reachable_from("bids") == [0, 1, 2, 3, 4]
    assert dag.schema_of("join") == BIDS


def test_routing_fan_in_of_two_sources():
    dag = (lj.DagBuilder().source("a", OTHER).source("b", OTHER)
           .operator("u", _filter()).connect("a", "u").connect("b", "u")
           .sink_for("u", "out").build())
    # a0 b1 u2 out3
    _assert_routing(dag, [0, 1, 2, 3, 3], [2, 2, 3])
    assert dag.sources == ["a", "b"]
    assert dag.upstreams_of("u") == ["a", "b"]
    assert dag.execution_order == ["a", "b", "u", "out"]
    assert dag.reachable_from("a") == [0, 2, 3]
    assert dag.reachable_from("b") == [1, 2, 3]
    assert not dag.is_multicast("a") and not dag.is_multicast("b")


def _ten_node_dag():
    return (
        lj.DagBuilder()
        .source("s1", BIDS, event_time="ts")                              # 0
        .source("s2", BIDS, event_time="ts")                              # 1
        .operator("hi", lj.Filter(EXPENSIVE))                             # 2
        .operator("lo", lj.Filter(CHEAP))                                 # 3
        .operator("both", lj.Filter(POSITIVE_QTY))                        # 4
        .operator("notional", lj.Map(notional, output="notional"))        # 5
        .operator("proj", lj.Project(["ts", "auction", "notional"]))      # 6
        .connect("s1", "hi").connect("s1", "lo")
        .connect("hi", "both").connect("lo", "both").connect("s2", "both")
        .connect("both", "notional").connect("notional", "proj")
        .sink_for("proj", "out")                                          # 7
        .sink_for("both", "raw")                                          # 8
        .sink_for("hi", "hi_out")                                         # 9
        .build()
    )


def test_routing_ten_node_dag():
    dag = _ten_node_dag()
    assert [n.name for n in dag.nodes] == ["s1", "s2", "hi", "lo", "both", "notional", "proj",
                                           "out", "raw", "hi_out"]
    assert [n.id for n in dag.nodes] == list(range(10))
    _assert_routing(
        dag,
        offsets=[0, 2, 3, 5, 6, 8, 9, 10, 10, 10, 10],
        targets=[2, 3, 4, 4, 9, 4, 5, 8, 6, 7],
    )
    # Kahn with a min-heap on ids: hi_out (9) is ready right after hi but runs last
    assert dag.execution_order == ["s1", "s2", "hi", "lo", "both", "notional", "proj",
                                   "out", "raw", "hi_out"]
    assert dag.sources == ["s1", "s2"]
    assert dag.sinks == ["out", "raw", "hi_out"]
    assert {n for n in dag.execution_order if dag.is_multicast(n)} == {"s1", "hi", "both"}
    assert {n for n in dag.execution_order if dag.is_terminal(n)} == {"out", "raw", "hi_out"}
    assert dag.targets_of("hi") == ["both", "hi_out"]
    assert dag.targets_of("both") == ["notional", "raw"]
    assert dag.upstreams_of("both") == ["hi", "lo", "s2"]  # in connect() order
    assert dag.reachable_from("s1") == [0, 2, 3, 4, 5, 6, 7, 8, 9]
    assert dag.reachable_from("s2") == [1, 4, 5, 6, 7, 8]
    assert dag.schema_of("out") == pa.schema([("ts", pa.int64()), ("auction", pa.int64()),
                                              ("notional", pa.float64())])
    assert dag.schema_of("raw") == BIDS
    # every edge in the routing table is an input of its target, and vice versa
    from_routing = {(u, int(t)) for u in range(10) for t in dag.routing.targets_of(u)}
    from_inputs = {(u, n.id) for n in dag.nodes for u, _ in n.inputs}
    assert from_routing == from_inputs
    assert len(dag.routing.targets) == 10


def test_execution_order_is_kahn_with_ties_by_insertion_id():
    def build():
        return (lj.DagBuilder()
                .source("z", OTHER)                 # 0
                .source("a", OTHER)                 # 1
                .sink_for("m", "out_m")             # declared early, id after all declared nodes: 4
                .operator("m", _filter())           # 2
                .operator("k", lj.Filter(CHEAP))    # 3
                .connect("a", "m").connect("z", "k")
                .sink_for("k", "out_k")             # 5
                .build())

    dag = build()
    assert [(n.name, n.id) for n in dag.nodes] == [("z", 0), ("a", 1), ("m", 2), ("k", 3),
                                                   ("out_m", 4), ("out_k", 5)]
    # A FIFO Kahn would give z, a, k, m, out_k, out_m; names sorted would start with a.
    assert dag.execution_order == ["z", "a", "m", "k", "out_m", "out_k"]
    assert dag.sources == ["z", "a"]
    assert dag.sinks == ["out_m", "out_k"]
    assert build().execution_order == dag.execution_order


def test_execution_order_follows_edges_not_declaration():
    dag = (lj.DagBuilder()
           .operator("c", _filter())      # 0
           .operator("b", _filter())      # 1
           .source("s", OTHER)            # 2
           .operator("a", _filter())      # 3
           .connect("s", "a").connect("a", "b").connect("b", "c")
           .sink_for("c", "out")          # 4
           .build())
    assert dag.execution_order == ["s", "a", "b", "c", "out"]
    _assert_routing(dag, [0, 1, 2, 3, 4, 4], [4, 0, 3, 1])
    assert dag.reachable_from("s") == [2, 3, 1, 0, 4]  # ids, in execution order


def test_routing_arrays_are_read_only():
    dag = _linear()
    with pytest.raises(ValueError):
        dag.routing.offsets[0] = 1
    with pytest.raises(ValueError):
        dag.routing.targets[0] = 0


def test_routing_table_directly():
    rt = lj.RoutingTable(5, [(0, 2), (0, 1), (1, 3), (2, 3), (3, 4), (0, 1)])  # duplicate dropped
    np.testing.assert_array_equal(rt.offsets, _as_int_array([0, 2, 3, 4, 5, 5]))
    np.testing.assert_array_equal(rt.targets, _as_int_array([1, 2, 3, 3, 4]))
    assert rt.is_multicast(0) and not rt.is_multicast(1)
    assert rt.is_terminal(4) and not rt.is_terminal(3)
    assert rt.n_nodes == 5
    assert "nodes=5" in repr(rt) and "edges=5" in repr(rt)
    empty = lj.RoutingTable(2, [])
    assert empty.offsets.dtype == np.int32 and empty.targets.dtype == np.int32
    assert empty.targets.shape == (0,)
    assert empty.is_terminal(0) and empty.is_terminal(1)


def test_building_twice_gives_equal_independent_dags():
    b = (_builder().operator("f", _filter()).connect("bids", "f").sink_for("f", "out"))
    d1, d2 = b.build(), b.build()
    assert d1 is not d2
    assert d1.nodes[1] is not d2.nodes[1]
    assert d1.execution_order == d2.execution_order
    np.testing.assert_array_equal(d1.routing.offsets, d2.routing.offsets)
    np.testing.assert_array_equal(d1.routing.targets, d2.routing.targets)
    assert d1.fingerprint == d2.fingerprint
    # the builder can still grow without touching the DAGs already built
    b.sink_for("bids", "raw")
    d3 = b.build()
    assert d3.sinks == ["out", "raw"]
    assert d1.sinks == ["out"]


def test_repr_mentions_sources_sinks_and_order():
    text = repr(_linear())
    assert "bids" in text and "out" in text and "with_notional" in text


# --------------------------------------------------------------------------- DOT

_EDGE = re.compile(r"^\s*n(\d+) -> n(\d+)(?: \[label=\"[^\"]*\"\])?;$")
_NODE = re.compile(r'^\s*n(\d+) \[label="((?:[^"\\]|\\.)*)", shape=\w+\];$')


def _dot_parts(dot):
    nodes, edges = {}, set()
    for line in dot.splitlines():
        if m := _EDGE.match(line):
            edges.add((int(m.group(1)), int(m.group(2))))
        elif "label=" in line:
            m = _NODE.match(line)
            assert m, f"malformed node line: {line!r}"
            nodes[int(m.group(1))] = m.group(2)
    return nodes, edges


@pytest.mark.parametrize("make", [_linear, _ten_node_dag], ids=["linear", "ten_nodes"])
def test_to_dot_has_every_node_and_edge(make):
    dag = make()
    dot = dag.to_dot()
    assert dot.startswith("digraph")
    assert dot.rstrip().endswith("}")
    nodes, edges = _dot_parts(dot)
    assert set(nodes) == {n.id for n in dag.nodes}
    for n in dag.nodes:
        assert nodes[n.id].split("\\n")[0] == n.name
        assert n.name in dot
    expected = {(u, int(t)) for u in range(len(dag.nodes)) for t in dag.routing.targets_of(u)}
    assert edges == expected


def test_to_dot_labels_operators_with_their_kernels():
    dag = (_builder().operator("big", lj.Filter(big_order))
           .operator("p", lj.Project({"t": "ts"}))
           .connect("bids", "big").connect("big", "p").sink_for("p", "out").build())
    nodes, _ = _dot_parts(dag.to_dot())
    assert nodes[dag.node("big").id] == "big\\nFilter(big_order)"
    assert nodes[dag.node("p").id] == "p\\nProject(t=ts)"


def test_to_dot_escapes_node_names():
    name = 'my "src"'
    dag = lj.DagBuilder().source(name, OTHER).sink_for(name, 'out "1"').build()
    nodes, edges = _dot_parts(dag.to_dot())
    assert nodes == {0: 'my \\"src\\"', 1: 'out \\"1\\"'}
    assert edges == {(0, 1)}


# --------------------------------------------------------------------------- fingerprints

THRESHOLD = 100.0
WEIGHTS = np.array([1.0, 2.0])
_cfg = types.ModuleType("laminar_test_cfg")
_cfg.THRESHOLD = 100.0


class Mode(enum.Enum):
    STRICT = 1
    LOOSE = 2


def over_global(price):
    return price > THRESHOLD


def weighted(price):
    return price * WEIGHTS[1]


def over_cfg(price):
    return price > _cfg.THRESHOLD


def strict_only(price):
    return price > 100.0 if Mode.STRICT == Mode.STRICT else price > 0.0


def _over(threshold):
    return lambda price: price > threshold


def _one_filter(fn, **source_kw):
    return (lj.DagBuilder().source("bids", BIDS, **source_kw)
            .operator("f", lj.Filter(fn)).connect("bids", "f").sink_for("f", "out").build())


def _fp_dag(threshold_200=False, **overrides):
    """A small DAG whose every ingredient can be varied by one keyword."""
    o = dict(source="bids", schema=BIDS, event_time="ts", delay=5_000, op="f", sink="out",
             map_out="notional", extra_sink=False)
    o.update(overrides)
    b = lj.DagBuilder().source(o["source"], o["schema"], event_time=o["event_time"],
                               watermark=lj.BoundedOutOfOrderness(max_delay=o["delay"]))
    pred = (lambda price: price > 200.0) if threshold_200 else (lambda price: price > 100.0)
    b.operator(o["op"], lj.Filter(pred))
    b.operator("m", lj.Map(lambda price, qty: price * qty, output=o["map_out"]))
    b.connect(o["source"], o["op"]).connect(o["op"], "m").sink_for("m", o["sink"])
    if o["extra_sink"]:
        b.sink_for(o["op"], "audit")
    return b.build()


def test_same_dag_built_twice_has_the_same_fingerprint():
    fp = _fp_dag().fingerprint
    assert isinstance(fp, str) and re.fullmatch(r"[0-9a-f]{64}", fp)
    assert _fp_dag().fingerprint == fp


def test_identical_lambdas_written_twice_share_a_fingerprint():
    a = _one_filter(lambda price: price > 100.0)
    b = _one_filter(lambda price: price > 100.0)
    assert a.fingerprint == b.fingerprint


def test_changing_a_lambda_constant_changes_the_fingerprint():
    assert _fp_dag(threshold_200=False).fingerprint != _fp_dag(threshold_200=True).fingerprint
    assert (_one_filter(lambda price: price > 100.0).fingerprint
            != _one_filter(lambda price: price > 200.0).fingerprint)


def test_changing_a_parameter_name_changes_the_fingerprint():
    assert (_one_filter(lambda price: price > 100.0).fingerprint
            != _one_filter(lambda qty: qty > 100.0).fingerprint)


@pytest.mark.parametrize("change", [
    dict(source="bids2"),
    dict(schema=BIDS.append(pa.field("extra", pa.int8()))),
    dict(event_time="auction"),
    dict(delay=6_000),
    dict(op="g"),
    dict(sink="out2"),
    dict(map_out="n2"),
    dict(extra_sink=True),
], ids=lambda c: next(iter(c)))
def test_every_ingredient_is_part_of_the_fingerprint(change):
    assert _fp_dag(**change).fingerprint != _fp_dag().fingerprint


def test_watermark_strategy_is_part_of_the_fingerprint():
    def make(wm):
        return (lj.DagBuilder().source("bids", BIDS, event_time="ts", watermark=wm)
                .sink_for("bids", "out").build().fingerprint)

    fps = {make(None), make(lj.Ascending()), make(lj.BoundedOutOfOrderness(max_delay=1)),
           make(lj.BoundedOutOfOrderness(max_delay=2))}
    assert len(fps) == 4


def test_closure_values_are_part_of_the_fingerprint():
    assert _one_filter(_over(100.0)).fingerprint == _one_filter(_over(100.0)).fingerprint
    assert _one_filter(_over(100.0)).fingerprint != _one_filter(_over(200.0)).fingerprint


def test_global_values_are_part_of_the_fingerprint(monkeypatch):
    before = _one_filter(over_global).fingerprint
    monkeypatch.setattr(sys.modules[__name__], "THRESHOLD", 200.0)
    after = _one_filter(over_global).fingerprint
    assert before is not None and after is not None
    assert before != after


def test_global_array_contents_are_part_of_the_fingerprint(monkeypatch):
    def make():
        return (lj.DagBuilder().source("bids", BIDS)
                .operator("w", lj.Map(weighted, output="w")).connect("bids", "w")
                .sink_for("w", "out").build().fingerprint)

    before = make()
    monkeypatch.setattr(sys.modules[__name__], "WEIGHTS", np.array([1.0, 3.0]))
    assert make() != before


def test_module_attribute_values_are_part_of_the_fingerprint(monkeypatch):
    before = _one_filter(over_cfg).fingerprint
    monkeypatch.setattr(_cfg, "THRESHOLD", 200.0)
    # the freshly compiled kernel does see the new value ...
    assert lj.Kernel(over_cfg)(150.0) is False
    assert lj.Kernel(over_cfg)(250.0) is True
    # ... so the fingerprint must change too
    assert _one_filter(over_cfg).fingerprint != before


def test_unhashable_global_gives_no_fingerprint_but_builds():
    dag = _one_filter(strict_only)
    assert dag.fingerprint is None
    assert dag.node("f").op.fingerprint() is None
    assert dag.execution_order == ["bids", "f", "out"]
    assert dag.schema_of("out") == BIDS
    # a DAG with a hashable kernel in the same position does have one
    assert _one_filter(lambda price: price > 100.0).fingerprint is not None


def test_unhashable_global_in_one_of_several_operators_gives_no_fingerprint():
    dag = (_builder().operator("ok", _filter()).operator("enum", lj.Filter(strict_only))
           .connect("bids", "ok").connect("ok", "enum").sink_for("enum", "out").build())
    assert dag.node("ok").op.fingerprint() is not None
    assert dag.fingerprint is None


def test_project_fingerprint_depends_on_the_mapping():
    assert lj.Project(["ts"]).fingerprint() == lj.Project(["ts"]).fingerprint()
    assert lj.Project(["ts"]).fingerprint() != lj.Project({"t": "ts"}).fingerprint()
    assert lj.Project(["ts", "price"]).fingerprint() != lj.Project(["price", "ts"]).fingerprint()


def test_map_fingerprint_depends_on_outputs():
    fn = lambda price: price  # noqa: E731 - the same function object for both
    assert lj.Map(fn, output="x").fingerprint() != lj.Map(fn, output="y").fingerprint()
    assert (lj.Map(fn, output={"x": pa.float32()}).fingerprint()
            != lj.Map(fn, output={"x": pa.float64()}).fingerprint())


# --------------------------------------------------------------------------- @lj.kernel

def test_kernel_decorator_makes_a_callable_kernel():
    assert isinstance(notional, lj.Kernel)
    assert notional.name == "notional"
    assert notional.params == ("price", "qty")
    assert notional(2.0, 3.0) == 6.0
    assert notional(2, 3) == 6
    assert big_order.name == "big_order"
    assert big_order(200.0, 100) is True
    assert big_order(1.0, 1) is False
    assert "notional(price, qty)" in repr(notional)


def test_kernel_decorator_with_a_display_name():
    @lj.kernel(name="pricey")
    def f(price):
        return price > 1_000.0

    assert f.name == "pricey"
    assert f(2_000.0) is True
    dag = _one_filter(f)
    assert "Filter(pricey)" in dag.to_dot()


def test_kernel_as_filter_and_map():
    dag = (_builder().operator("big", lj.Filter(big_order))
           .operator("n", lj.Map(notional, output="notional"))
           .connect("bids", "big").connect("big", "n").sink_for("n", "out").build())
    assert dag.node("big").bound.reads == ("price", "qty")
    assert dag.schema_of("n").field("notional").type == pa.float64()
    assert dag.node("big").op.kernel is big_order  # not re-wrapped
    assert dag.fingerprint is not None


@requires_jit
def test_kernel_from_a_numba_dispatcher_or_a_kernel():
    jitted = numba.njit(lambda price: price * 2.0)
    k = lj.Kernel(jitted)
    assert k.fn is jitted.py_func
    assert k(1.5) == 3.0
    assert lj.Kernel(notional).fn is notional.fn
    dag = (_builder().operator("m", lj.Map(jitted, output="double"))
           .connect("bids", "m").sink_for("m", "out").build())
    assert dag.schema_of("m").field("double").type == pa.float64()


def test_kernel_on_integer_column_infers_integer_output():
    dag = (_builder().operator("m", lj.Map(notional, output="n"))
           .connect("bids", "m").sink_for("m", "out").build())
    # price float64 * qty int64 -> float64
    assert dag.node("m").bound.read_dtypes == (np.dtype(np.float64), np.dtype(np.int64))
    dag = (lj.DagBuilder().source("s", pa.schema([("price", pa.int32()), ("qty", pa.int32())]))
           .operator("m", lj.Map(notional, output="n")).connect("s", "m")
           .sink_for("m", "out").build())
    assert pa.types.is_integer(dag.schema_of("m").field("n").type)


# --------------------------------------------------------------------------- typed settings

def _keyed_sum(st, price):
    st.total += price
    return st.total


def test_bound_settings_are_typed_specs_in_event_time_units():
    ms = pa.schema([("ts", pa.timestamp("ms")), ("k", pa.int64()), ("sym", pa.string()), ("price", pa.float64())])
    dag = (lj.DagBuilder()
           .source("a", ms, event_time="ts").source("b", ms, event_time="ts")
           .operator("j", lj.IntervalJoin("k", "k", lower=datetime.timedelta(seconds=-1),
                                          upper=datetime.timedelta(seconds=2), how="left",
                                          allowed_lateness=datetime.timedelta(milliseconds=250)))
           .connect("a", "j", port="left").connect("b", "j", port="right")
           .operator("w", lj.WindowJoin(datetime.timedelta(seconds=10), "k", "k", offset=datetime.timedelta(seconds=13)))
           .connect("a", "w", port="left").connect("b", "w", port="right")
           .operator("kk", lj.KeyedKernel(_keyed_sum, key="k", state={"total": np.float64},
                                          output={"total": pa.float64()}))
           .connect("a", "kk")
           .operator("g", lj.GroupAggregate(key="sym", aggs={"n": lj.count()}))
           .connect("b", "g")
           .sink_for("j", "o1").sink_for("w", "o2").sink_for("kk", "o3").sink_for("g", "o4")
           .build())
    assert not hasattr(Bound, "extra")
    j = dag.node("j").bound
    assert isinstance(j.spec, lj.ops.joins.JoinSpec)
    assert (j.spec.kind, j.spec.how, j.spec.lower, j.spec.upper, j.spec.lateness) == ("interval", "left", -1000,
                                                                                        2000, 250)
    assert j.spec.out_sides == ("left", "right") and j.output_event_time == "ts"
    assert j.spec.port("right") is j.spec.right and j.spec.left.keys == ("k",)
    assert [name for name, _ in j.spec.left.payload] == ms.names and j.spec.left.payload[2][1] is None  # a string
    w = dag.node("w").bound.spec
    assert (w.kind, w.size, w.offset) == ("window", 10_000, 3_000)
    kk = dag.node("kk").bound
    assert isinstance(kk.spec, lj.ops.keyed.KeyedSpec)
    assert (kk.spec.keys, kk.spec.event_time, kk.spec.n_outputs, kk.output_event_time) == (("k",), "ts", 1, "ts")
    assert dag.node("g").bound.output_event_time is None  # an updating result has no event time
