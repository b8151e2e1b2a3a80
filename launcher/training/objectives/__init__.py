"""One ``Objective`` per method: the batch-to-loss part of training (the ``Trainer`` owns everything else).

- ``sft.CausalLMObjective``: token cross-entropy at trained positions (SFT, pretraining text).
- ``preference.PreferenceObjective``: DPO and its variants (IPO, hinge, SimPO, ORPO), with the reference.
"""
from launcher.training.objectives.base import Objective, to_device, unwrap_loss_module

__all__ = ["Objective", "to_device", "unwrap_loss_module"]
