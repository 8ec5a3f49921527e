"""Deterministic global batches, identical for any number of processes.

Step s of a run always trains on the same global batch of `global_size = batch_size * grad_accum *
world` pairs, derived from (seed, epoch) alone. That makes a resumed run continue exactly, and a
2-process run see the same pairs as a 1-process run with twice the per-device batch. With length
buckets on, pairs of similar length share a batch (less padding); batches are then shuffled.
"""

from __future__ import annotations

import torch


class GlobalBatches:
    def __init__(self, lengths: list[int], global_size: int, *, seed: int, length_buckets: bool,
                 bucket_span: int = 64):
        if len(lengths) < global_size:
            raise ValueError(f"{len(lengths)} pairs is fewer than one global batch of {global_size}")
        self.lengths = lengths
        self.global_size = global_size
        self.seed = seed
        self.length_buckets = length_buckets
        self.bucket_span = bucket_span
        self.steps_per_epoch = len(lengths) // global_size  # the last partial batch is dropped
        self._epoch, self._batches = -1, []

    def _epoch_batches(self, epoch: int) -> list[list[int]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(len(self.lengths), generator=g).tolist()
        if self.length_buckets:  # sort within spans of many batches, so batches stay random-ish
            span = self.global_size * self.bucket_span
            order = [i for s in range(0, len(order), span)
                     for i in sorted(order[s:s + span], key=lambda i: self.lengths[i])]
        batches = [order[i * self.global_size:(i + 1) * self.global_size] for i in range(self.steps_per_epoch)]
        perm = torch.randperm(len(batches), generator=g).tolist()
        return [batches[p] for p in perm]

    def batch(self, step: int) -> list[int]:
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            self._epoch, self._batches = epoch, self._epoch_batches(epoch)
        return self._batches[index]

    @staticmethod
    def micro_batch(global_batch: list[int], micro: int, rank: int, world: int, batch_size: int) -> list[int]:
        """The slice of a global batch that `rank` trains on in accumulation step `micro`.

        The split is by position, so the same global batch is covered whatever the world size; with
        length buckets a global batch is a sorted run, so each micro-batch pads little."""
        start = (micro * world + rank) * batch_size
        return global_batch[start:start + batch_size]
