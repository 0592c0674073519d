"""Faults injected into a Trainer by the tests (test_trainer.py, test_distributed.py and the
torchrun worker ddp_worker.py)."""

from __future__ import annotations


def nan_at(calls: set[int]):
    """Patch a trainer's model loss so the given calls (1-based) return NaN; a trainer's
    thrown-away passes (compile's first use, DDP's bucket layout) are not counted."""
    def patch(trainer):
        original = trainer.model.loss
        count = [0]

        def loss(inputs, targets, state):
            count[0] += not getattr(trainer, "_probing", False)
            value, state = original(inputs, targets, state)
            return (value * float("nan") if count[0] in calls else value), state

        trainer.model.loss = loss
    return patch
