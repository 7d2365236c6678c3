"""Sharded models on ``torch.distributed``: which elements each rank holds, and the collectives initlab uses.

initlab does not run its own engine: a model sharded with FSDP2 (``fully_shard``), tensor parallelism
(``parallelize_module``) or both holds DTensor parameters, and :meth:`Plan.apply
<initlab.plan.Plan.apply>` fills each rank's local shard with the values it has in the whole tensor
(:mod:`initlab.initializers.counter_fill`), while :func:`initlab.inspect` reduces its statistics over
the ranks. This layer sits right above the catalogue: :mod:`~initlab.distributed.placements` turns
placements into :class:`~initlab.initializers.shard_index.ShardIndex` sets, and
:mod:`~initlab.distributed.comm` holds the few collectives (agreeing on errors and failures, sending an
owner's blocks, one summed vector), each a no-op without a process group.
"""

from .comm import active, all_reduce_sum, any_rank, gather_objects, rank, world
from .placements import counts_once, is_dtensor, local_tensor, shard_index, shard_index_from

__all__ = [
    "active",
    "all_reduce_sum",
    "any_rank",
    "counts_once",
    "gather_objects",
    "is_dtensor",
    "local_tensor",
    "rank",
    "shard_index",
    "shard_index_from",
    "world",
]
