"""DAG description, validation, schema propagation and routing."""

from .builder import DagBuilder
from .graph import Node, SourceSpec, StreamingDag
from .routing import MAX_FAN_OUT, RoutingTable

__all__ = ["MAX_FAN_OUT", "DagBuilder", "Node", "RoutingTable", "SourceSpec", "StreamingDag"]
