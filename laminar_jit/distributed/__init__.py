"""Key-partitioned execution of one DAG across processes and machines on Ray.

``lj.run(dag, ..., partitions=N, cluster="ray")`` cuts the DAG at its
exchange (:mod:`.plan`), runs one reader per source shard and one partition
per key range as Ray actors (:mod:`.actors`), and coordinates watermarks,
aligned checkpoints and recovery from the driver (:mod:`.coordinator`).
"""

from .exchange import key_hash, partition_batch
from .plan import Exchange, SplitPlan, split_dag

__all__ = ["Exchange", "SplitPlan", "key_hash", "partition_batch", "split_dag"]
