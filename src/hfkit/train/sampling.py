"""Which examples each process trains on at each step: deterministic from (seed, epoch), optionally by length."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import ConfigError

MEGA_BATCH = 50  # global batches per length-sorted mega-batch (transformers' LengthGroupedSampler)


def batch_indices(lengths: Sequence[int], batch_size: int, *, seed: int, epoch: int, shuffle: bool = True,
                  group_by_length: bool = False, rank: int = 0, world_size: int = 1,
                  drop_last: bool = False) -> list[list[int]]:
    """This rank's batches of example indices for one epoch.

    Step k's global batch holds `batch_size * world_size` examples and rank r gets its r-th contiguous slice,
    so the ranks of a step together see exactly what one process with `batch_size * world_size` sees.
    Shuffling draws from `torch.Generator().manual_seed(seed + epoch)` (DistributedSampler's rule).

    `group_by_length`: the shuffled order is cut into mega-batches of 50 global batches, each sorted by length
    (longest first), then the full global batches are shuffled and the one holding the longest example moved
    to step 0, so running out of memory shows at once.

    The last global batch may be short: `drop_last` drops it; otherwise it is split as evenly as possible
    (ranks differ by at most one example). A last batch with fewer examples than `world_size` is always dropped:
    some rank would get an empty batch and no step, while DDP needs every rank to step together. So one
    process keeps every example, and `world_size` processes drop at most `world_size - 1` per epoch.
    """
    for name, value, low in (("batch_size", batch_size, 1), ("world_size", world_size, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}.")
    if not 0 <= rank < world_size:
        raise ConfigError(f"rank must be in 0..{world_size - 1} (world_size {world_size}), got {rank}.")
    count, global_size = len(lengths), batch_size * world_size
    generator = torch.Generator().manual_seed(seed + epoch)
    order = torch.randperm(count, generator=generator).tolist() if shuffle else list(range(count))
    if group_by_length:
        mega = MEGA_BATCH * global_size
        order = [i for s in range(0, count, mega) for i in sorted(order[s : s + mega], key=lambda i: -lengths[i])]
    batches = [order[s : s + global_size] for s in range(0, count, global_size)]
    if batches and len(batches[-1]) < (global_size if drop_last else world_size):
        batches.pop()
    if group_by_length and batches:
        full = len(batches) - (len(batches[-1]) < global_size)  # a short last batch stays last
        if shuffle:
            batches = [batches[i] for i in torch.randperm(full, generator=generator).tolist()] + batches[full:]
        longest = max(range(len(batches)), key=lambda b: max(lengths[i] for i in batches[b]))
        batches[0], batches[longest] = batches[longest], batches[0]
    return [_share(batch, rank, world_size) for batch in batches]


def _share(batch: list[int], rank: int, world_size: int) -> list[int]:
    """Rank `rank`'s contiguous part of a global batch; the first `len % world_size` ranks get one more."""
    size, extra = divmod(len(batch), world_size)
    start = rank * size + min(rank, extra)
    return batch[start : start + size + (rank < extra)]
