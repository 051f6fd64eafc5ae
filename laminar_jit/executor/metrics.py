"""Executor metrics: a numpy counter array the compiled step updates in place."""

from __future__ import annotations

import numpy as np

from .core import MetricsLayout

__all__ = ["Metrics"]


class Metrics:
    """Counters of a :class:`~laminar_jit.DagExecutor`.

    Attributes
    ----------
    events_in : int
        Rows accepted at sources.
    events_processed : int
        Rows entering operator nodes (summed over operators).
    events_routed : int
        Rows sent along edges (a multicast to k targets counts k times).
    batches : int
        Source batches processed.
    multicast_publishes : int
        Non-empty outputs of nodes with more than one target, per compiled
        dispatch (small batches are coalesced into one dispatch).
    late_events : int
        Rows dropped (or side-routed) as late by event-time operators (per
        node in :meth:`node`).
    nodes_skipped : int
        Operator invocations skipped because their input was empty, per
        compiled dispatch.
    """

    def __init__(self, node_names: list[str]):
        self._names = list(node_names)
        self._layout = MetricsLayout(len(self._names))
        #: int64 counters the compiled steps update, laid out as :class:`MetricsLayout` says.
        self.counters = np.zeros(self._layout.size, dtype=np.int64)
        self.events_in = 0
        self.batches = 0

    def _slot(self, name: str) -> int:
        return int(self.counters[self._layout.index(name)])

    @property
    def events_processed(self) -> int:
        return self._slot("events_processed")

    @property
    def events_routed(self) -> int:
        return self._slot("events_routed")

    @property
    def multicast_publishes(self) -> int:
        return self._slot("multicast_publishes")

    @property
    def nodes_skipped(self) -> int:
        return self._slot("nodes_skipped")

    @property
    def late_events(self) -> int:
        return self._slot("late_events")

    def node(self, name: str) -> dict[str, int]:
        """``{"rows_in": …, "rows_out": …, "late_events": …}`` of one node.

        ``late_events`` counts the rows an event-time operator found late
        (dropped, or sent to its side output); it is 0 for other nodes.
        """
        i = self._names.index(name)
        return {what: int(self.counters[self._layout.index(what, i)]) for what in MetricsLayout.PER_NODE}

    @property
    def per_node(self) -> dict[str, dict[str, int]]:
        """Rows in/out and late rows of every node, by name."""
        return {name: self.node(name) for name in self._names}

    def as_dict(self) -> dict[str, int]:
        """The global counters as a plain dict."""
        return {
            "events_in": self.events_in,
            "events_processed": self.events_processed,
            "events_routed": self.events_routed,
            "batches": self.batches,
            "multicast_publishes": self.multicast_publishes,
            "late_events": self.late_events,
            "nodes_skipped": self.nodes_skipped,
        }

    def __repr__(self) -> str:
        return "Metrics(" + ", ".join(f"{k}={v}" for k, v in self.as_dict().items()) + ")"
