"""QLoRA's base: the pretrained model loaded quantized (bitsandbytes), and where that cannot run.

torch is imported where a model is built, so the preflight asks ``qlora_problem`` without it.
"""
from __future__ import annotations

from typing import Optional

from launcher.config.schema import Config
from launcher.errors import ConfigError
from launcher.packages import package_installed


def qlora_problem(cfg: Config, gpus: int, where: str) -> Optional[str]:
    """One line when QLoRA (method.lora.quantize) cannot run: bitsandbytes' kernels need a CUDA GPU."""
    q = cfg.method.lora.quantize
    if not q or cfg.method.finetuning != "lora":
        return None
    if gpus < 1:
        return (f"method.lora.quantize={q}: QLoRA's bitsandbytes kernels need a CUDA GPU and this run has none"
                f" ({where}); drop method.lora.quantize to train LoRA on the full-precision base, or run on a GPU")
    if not package_installed("bitsandbytes"):
        return (f"method.lora.quantize={q}: needs the bitsandbytes package, which is not installed in this"
                " environment; pip install bitsandbytes (or pip install -e '.[gpu]')")
    return None


def quantization_config(quantize: str, double_quantization: bool = True):
    """QLoRA's base: nf4 with double quantization (method.lora.double_quantization) and bf16 compute (the QLoRA
    paper's and LLaMA-Factory's defaults), or LLM.int8 for 8bit."""
    import torch
    from transformers import BitsAndBytesConfig

    if quantize == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                  bnb_4bit_use_double_quant=double_quantization,
                                  bnb_4bit_compute_dtype=torch.bfloat16)
    return BitsAndBytesConfig(load_in_8bit=True)


def build_quantized_base(cfg: Config, attn_implementation: str, device):
    """QLoRA: the pretrained base loaded quantized by bitsandbytes onto this rank's GPU (a torch.device),
    prepared for training adapters on it (peft's prepare_model_for_kbit_training: norms and head in fp32, input
    gradients for checkpointing). Raises ConfigError in one line where bitsandbytes cannot run (no CUDA, not
    installed)."""
    gpus = 1 if device.type == "cuda" else 0
    problem = qlora_problem(cfg, gpus, f"this rank runs on {device.type}")
    if problem:
        raise ConfigError(problem)
    import torch
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM

    m = cfg.model
    model = AutoModelForCausalLM.from_pretrained(
        m.name_or_path, quantization_config=quantization_config(cfg.method.lora.quantize, cfg.method.lora.double_quantization), dtype=torch.bfloat16,
        device_map={"": device}, attn_implementation=attn_implementation, trust_remote_code=m.trust_remote_code,
    )
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=cfg.train.gradient_checkpointing,
                                           gradient_checkpointing_kwargs={"use_reentrant": False,
                                                                          **cfg.train.gradient_checkpointing_kwargs})
