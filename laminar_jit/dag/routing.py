"""The routing table: who receives a node's output, as two int32 arrays (CSR)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["MAX_FAN_OUT", "RoutingTable"]

#: Most downstream targets one node may have (sinks included). Each target of a
#: multicast shares the publisher's selection vector, so the limit is not a
#: memory bound; it keeps the fan-out of one node readable and mirrors the
#: Ring 0 executor's fixed routing-entry width. Override with
#: ``DagBuilder(max_fan_out=...)``.
MAX_FAN_OUT = 8


class RoutingTable:
    """Compressed-sparse-row adjacency of a finalized DAG.

    Node ``i`` routes its output to ``targets[offsets[i]:offsets[i + 1]]``
    (ascending node ids). Degree > 1 is a multicast; degree 0 is terminal.

    Attributes
    ----------
    offsets : numpy.ndarray
        int32, length ``n_nodes + 1``.
    targets : numpy.ndarray
        int32, length = number of edges.
    """

    def __init__(self, n_nodes: int, edges: Sequence[tuple[int, int]]):
        order = sorted(set(edges))
        self.offsets = np.zeros(n_nodes + 1, dtype=np.int32)
        for src, _ in order:
            self.offsets[src + 1] += 1
        np.cumsum(self.offsets, out=self.offsets)
        self.targets = np.array([dst for _, dst in order], dtype=np.int32)
        self.offsets.setflags(write=False)
        self.targets.setflags(write=False)

    @property
    def n_nodes(self) -> int:
        return len(self.offsets) - 1

    def targets_of(self, node_id: int) -> np.ndarray:
        """Target ids of ``node_id`` (a read-only view)."""
        return self.targets[self.offsets[node_id]:self.offsets[node_id + 1]]

    def degree(self, node_id: int) -> int:
        return int(self.offsets[node_id + 1] - self.offsets[node_id])

    def is_multicast(self, node_id: int) -> bool:
        return self.degree(node_id) > 1

    def is_terminal(self, node_id: int) -> bool:
        return self.degree(node_id) == 0

    def __repr__(self) -> str:
        return f"RoutingTable(nodes={self.n_nodes}, edges={len(self.targets)})"
