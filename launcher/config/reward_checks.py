"""What method=rm (a reward model: launcher.models.reward) cannot do, refused when the config is checked."""
from __future__ import annotations

from launcher.errors import ConfigError


def check_reward_model(cfg) -> None:
    """Raise ConfigError for a reward-model config this project does not build."""
    from launcher.models.vision import vision_info

    if cfg.method.lora.quantize is not None:
        raise ConfigError("method.lora.quantize: a quantized (QLoRA) base is not built as a reward model here;"
                          " use method=rm_lora with method.lora.quantize=null")
    if vision_info(cfg.model):
        raise ConfigError(f"model: method=rm scores text with AutoModelForSequenceClassification, which has no"
                          f" class for the vision-language model {cfg.model.name_or_path or cfg.model.arch};"
                          " use a text-only model")
