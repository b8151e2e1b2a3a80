"""One ``Objective`` per method: the batch-to-loss part of training (the ``Trainer`` owns everything else).

- ``sft.CausalLMObjective``: token cross-entropy at trained positions (SFT, pretraining text).
- ``preference.PreferenceObjective``: DPO and its variants (IPO, hinge, SimPO, ORPO), with the reference.
- ``kto.KTOObjective``: KTO on thumbs-up/down rows, the KL reference point from mismatched pairs per micro-batch.
- ``reference``: the reference model DPO and KTO share (frozen copy, adapters off, precomputed log-probs).
"""
from launcher.training.objectives.base import Objective, to_device, unwrap_loss_module

__all__ = ["Objective", "to_device", "unwrap_loss_module"]
