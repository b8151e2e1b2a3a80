"""DeepSpeed ZeRO (stages 1-3, optional CPU offload) behind the engine interface of launcher/engines/base.py.

Why ``deepspeed.initialize`` directly and not the HF Trainer or accelerate: we own the training loop, so the
loss stays normalized by the trained tokens of the whole step across micro-batches and ranks (the Trainer's
per-micro-batch mean skews variable-length batches, transformers#34191), resume restores our data plan and
RNG exactly, and nothing silently replaces the requested strategy (accelerate drops FSDP on CPU without a
word; see the team notes in shared/docs/cpu-cluster-facts.md). DeepSpeed here is only the sharded optimizer and parameter store.

Gradient semantics, made equal to DDP's: DeepSpeed averages gradients over data-parallel ranks, like DDP,
and would divide the loss by gradient_accumulation_steps; we pass ``scale_wrt_gas=False`` because the loop
already divides by the trained tokens of the whole step. The accumulation boundary is set explicitly per
micro-batch, so one ``step()`` per optimizer step is right whatever the accumulation count.

On CPU (gloo) the generated config is fp32, uses our own torch AdamW (no fused_adam / cpu_adam JIT build),
and skips DeepSpeed's shared-memory all-reduce kernel (a ~90 s JIT build it only uses for inference).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from launcher.config.schema import Config, resolve_grad_accum
from launcher.engines.distributed import DistInfo, ensure_process_group
from launcher.engines.base import Engine, LossFactory, require_checkpoint_kind, strip_wrapper_prefix
from launcher.engines.checkpoint_layout import DEEPSPEED_TAG, STATE_FILE
from launcher.engines.optim import build_optimizer, build_scheduler, param_groups
from launcher.engines.precision import Precision

log = logging.getLogger(__name__)


def build_deepspeed_config(cfg: Config, world_size: int, grad_accum: int, on_gpu: bool,
                           bf16: bool, fp16: bool = False) -> dict[str, Any]:
    """The DeepSpeed config for this run: a pure function of our config (tested without DeepSpeed).
    ``fp16``: DeepSpeed's fp16 mode with dynamic loss scaling (loss_scale 0), for GPUs without bf16."""
    p, t = cfg.parallelism, cfg.train
    zero: dict[str, Any] = {"stage": p.zero_stage, "overlap_comm": on_gpu, "contiguous_gradients": True}
    if p.zero_stage == 3:
        # Gather the full 16-bit weights at save time, so a ZeRO-3 run leaves a loadable HF model.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        if not on_gpu:
            # DeepSpeed keeps gathered parameters it will reuse within 1e9 parameters (its defaults): once a step
            # is traced, every layer stays gathered from forward to backward, and a CPU rank holds the whole model
            # (0.35B LoRA, 2 ranks: 3.38 GB from step 2 on, not 1.97). Release each after use; on a GPU the
            # defaults stay (speed), and parallelism.deepspeed can set either.
            zero["stage3_max_reuse_distance"] = 0
            zero["stage3_max_live_parameters"] = 0
    if p.offload:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": on_gpu}
        if p.zero_stage == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": on_gpu}
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": grad_accum,
        "train_batch_size": t.micro_batch_size * grad_accum * world_size,
        "gradient_clipping": t.max_grad_norm if t.max_grad_norm > 0 else 0.0,
        "zero_optimization": zero,
        "bf16": {"enabled": bool(bf16)},
        # Dynamic loss scaling (loss_scale 0): start at 2^16, halve on overflow (the step is skipped), double
        # after 1000 clean steps; DeepSpeed's defaults, written out so the rendered config says what runs.
        "fp16": ({"enabled": True, "loss_scale": 0, "initial_scale_power": 16, "loss_scale_window": 1000,
                  "hysteresis": 2, "min_loss_scale": 1} if fp16 else {"enabled": False}),
        # The optimizer is ours (build_zero_optimizer: DeepSpeed's CPU Adam on an offloaded GPU run where it
        # builds, torch's AdamW otherwise); with offload DeepSpeed would otherwise insist on its cpu_adam.
        "zero_force_ds_cpu_optimizer": False,
        "zero_allow_untested_optimizer": True,
        "steps_per_print": 1 << 30,
        "wall_clock_breakdown": False,
    }
    return _deep_merge(config, p.deepspeed)


def _deep_merge(base: dict, extra: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (extra or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def skip_shm_comm_build() -> None:
    """Mark DeepSpeed's CPU shared-memory all-reduce op unavailable before deepspeed.comm starts.

    Building it JIT-compiles C++ for about 90 s on a fresh machine, and training never calls it (it serves
    ``inference_all_reduce`` only); gloo does our collectives. Set LAUNCHER_DS_SHM_COMM=1 to keep it.
    """
    import os

    if os.environ.get("LAUNCHER_DS_SHM_COMM") == "1" or torch.cuda.is_available():
        return
    import deepspeed.ops

    # DeepSpeed caches the probe result in the module; an edit to that dict is what build_shm_op reads.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def start_deepspeed(dist_info: DistInfo) -> None:
    """DeepSpeed's communication on our process group (before zero.Init or initialize)."""
    import deepspeed

    skip_shm_comm_build()
    ensure_process_group(dist_info.device)
    deepspeed.init_distributed(dist_backend="nccl" if dist_info.device.type == "cuda" else "gloo",
                               auto_mpi_discovery=False)


def run_deepspeed_config(cfg: Config, dist_info: DistInfo, precision: Precision) -> dict[str, Any]:
    return build_deepspeed_config(cfg, dist_info.world_size, resolve_grad_accum(cfg, dist_info.world_size),
                                  dist_info.device.type == "cuda", precision.bf16, precision.fp16)


CPU_ADAM = "deepspeed_cpu_adam"
TORCH_OPTIMIZER = "torch"


def cpu_adam_status() -> tuple[bool, str]:
    """Whether DeepSpeed's CPU Adam (a C++ op with AVX kernels) can run here, and how it gets built: prebuilt
    in the DeepSpeed install (DS_BUILD_CPU_ADAM=1 pip install deepspeed), or JIT-compiled with ninja on the
    first use, which costs about 1-2 minutes of one node's CPUs and is cached under TORCH_EXTENSIONS_DIR
    (default ~/.cache/torch_extensions) for every later run with the same torch/CUDA/Python. Builds nothing."""
    import glob
    import os
    import shutil

    import deepspeed.git_version_info as ds_version
    from deepspeed.ops.op_builder import CPUAdamBuilder

    if ds_version.installed_ops.get("cpu_adam"):
        return True, "prebuilt in this DeepSpeed install"
    if not CPUAdamBuilder().is_compatible(verbose=False):
        return False, "DeepSpeed says its CPU Adam op is not compatible with this system (see `ds_report`)"
    if shutil.which("ninja") is None:
        return False, "its JIT build needs ninja (pip install ninja), which is not on PATH"
    cache = os.environ.get("TORCH_EXTENSIONS_DIR", os.path.expanduser("~/.cache/torch_extensions"))
    cached = glob.glob(os.path.join(cache, "*", "cpu_adam", "cpu_adam*.so"))
    if cached:
        return True, f"built before, cached at {cached[0]}"
    return True, (f"JIT-compiled now (once: about 1-2 min, cached under {cache}; prebuild with DS_BUILD_CPU_ADAM=1)")


def offload_optimizer_choice(on_gpu: bool, offload: bool, method, cpu_adam: tuple[bool, str]) -> tuple[str, str]:
    """Which optimizer updates the parameters: DeepSpeed's CPU Adam where ZeRO offloads the optimizer state
    from a GPU run and the op is available (``cpu_adam_status``), as it is several times faster than torch's
    AdamW on CPU tensors; torch's otherwise (also on a CPU-only run: the same update as the DDP path, no build).
    Returns (CPU_ADAM | TORCH_OPTIMIZER, the reason, empty when there is nothing to say)."""
    if not (on_gpu and offload):
        return TORCH_OPTIMIZER, ""
    if method.optimizer != "adamw":
        return TORCH_OPTIMIZER, f"method.optimizer={method.optimizer}: DeepSpeed's CPU Adam is Adam only; torch's runs"
    if method.finetuning == "lora" and method.lora.plus_lr_ratio:
        return TORCH_OPTIMIZER, "LoRA+ (method.lora.plus_lr_ratio) builds its groups for torch's AdamW; torch's runs"
    ok, how = cpu_adam
    if not ok:
        return TORCH_OPTIMIZER, (f"DeepSpeed's CPU Adam is not available: {how}; torch's AdamW updates the offloaded"
                                 " state instead (same result, several times slower per step)")
    return CPU_ADAM, f"DeepSpeed's CPU Adam for the offloaded optimizer state ({how})"


def build_zero_optimizer(model: nn.Module, method, on_gpu: bool, offload: bool) -> torch.optim.Optimizer:
    """The optimizer handed to ``deepspeed.initialize``: ``offload_optimizer_choice`` says which, with a log line;
    a failed JIT build falls back to torch's AdamW, saying why."""
    choice, reason = offload_optimizer_choice(on_gpu, offload, method,
                                              cpu_adam_status() if on_gpu and offload else (False, ""))
    if choice == CPU_ADAM:
        log.info("optimizer: %s", reason)
        try:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(param_groups(model, method.weight_decay), lr=method.lr,
                                    betas=(method.adam_beta1, method.adam_beta2), eps=method.adam_eps,
                                    adamw_mode=True)
        except Exception as err:  # the JIT build failed (compiler, headers): train on, with torch's AdamW
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            reason = f"DeepSpeed's CPU Adam failed to build ({first}); torch's AdamW updates the offloaded state"
    if reason:
        log.warning("optimizer: %s", reason)
    return build_optimizer(model, method)


ZERO3_BUILT_ATTR = "_launcher_hf_deepspeed_config"
"""Attribute of a model built partitioned: the HfDeepSpeedConfig that must outlive it (transformers holds only
a weak reference, and asks it whether ZeRO-3 is on whenever it touches the model)."""


def zero_init_dtype(dtype: torch.dtype, ds_config: dict) -> torch.dtype | None:
    """The ``dtype`` to pass to ``zero.Init``: None for fp32 (the config, with bf16 and fp16 off, then says fp32).

    A workaround for DeepSpeed 0.19.8 (partition_parameters.py, ``Init._set_dtype``): with a dtype given it runs
    ``dtype or torch.float16 if accel.is_fp16_supported() else torch.bfloat16 if accel.is_bf16_supported else
    torch.float32``, which parses as ``(dtype or fp16) if fp16_supported else (bf16 if <bound method> ...)``.
    Its CPU accelerator says fp16 is supported only where oneDNN has fp16 (AVX512-FP16/AMX CPUs), so on other
    CPUs (AMD EPYC with AVX2 here) an explicit float32 became bf16: every ZeRO-3 parameter stored rounded to
    bf16, and 2-rank ZeRO-3 runs drifted from one process / DDP (weights off by up to 2^-8 relative). Without a
    dtype it reads the config's bf16 / fp16 sections, which build_deepspeed_config sets from the precision.
    """
    low_precision = (ds_config.get("bf16") or {}).get("enabled") or (ds_config.get("fp16") or {}).get("enabled")
    return None if dtype == torch.float32 and not low_precision else dtype


def import_model_classes(auto_class, config) -> None:
    """Import the modeling module of ``config``'s model before a ``zero.Init`` context is entered.

    A workaround for DeepSpeed 0.19.8's ``zero.Init`` (partition_parameters.py, patch/unpatch_init_and_builtins)
    meeting class decorators that replace ``__init__``: inside the context every nn.Module class created gets
    ``_old_init = __init__`` and a wrapped ``__init__``; on exit ``__init__`` is set back to that ``_old_init``.
    transformers 5.24 with the ``kernels`` package installed decorates attention classes with
    ``@use_kernelized_func`` (kernels' ``new_init`` adds the per-instance ``_kernel_funcs`` that the decorated
    forward reads) after the class is created. So when the modeling module is first imported inside zero.Init
    (``from_config`` imports it lazily), the exit restores the undecorated ``__init__`` for good: the model
    built in the context works, but every model of that class built afterwards in the process (KTO's frozen
    reference, a reload) fails in forward with "'Qwen2Attention' object has no attribute '_kernel_funcs'".
    Imported before the context, the classes are created unpatched and zero.Init restores their own
    (decorated) ``__init__``. Remote-code models are imported by ``from_config`` itself (left as they are).
    """
    mapping = getattr(auto_class, "_model_mapping", None)
    if mapping is not None and type(config) in mapping:
        mapping[type(config)]  # the lookup imports the modeling module


def build_zero3_model(cfg: Config, tokenizer, dist_info: DistInfo, attn_implementation: str,
                      precision: Precision) -> nn.Module:
    """The HF model with its parameters partitioned over the ranks from the start (ZeRO-3): constructed under
    ``zero.Init`` (every parameter is partitioned as its module is built), then filled one gathered parameter
    at a time: from the checkpoint (rank 0 reads the tensor from the safetensors, zero.Init's gather
    broadcasts it and every rank keeps its partition), or by the model's own init for random init.
    Parameters are stored in DeepSpeed's dtype (bf16 in its bf16 mode, its fp32 master copy lives in the
    optimizer; fp32 on a CPU).

    Why not ``from_pretrained`` under ``HfDeepSpeedConfig`` (transformers' integration, still the fallback for
    .bin checkpoints): transformers 5.24 materializes the whole state dict, cast to the model's dtype, on every
    rank before copying it in (measured: ~3x the fp32 model per rank for a 69M model); here a rank holds its
    partition plus one gathered tensor.

    Random init draws rank 0's numbers in the plain build's order (rank 0 initializes, the gather broadcasts),
    then every rank takes rank 0's RNG state, so what follows (LoRA) draws the same everywhere.
    """
    import deepspeed
    from transformers import AutoModelForCausalLM
    from transformers import initialization
    from transformers.integrations import HfDeepSpeedConfig

    from launcher.engines.distributed import broadcast_object
    from launcher.engines.loading import safetensors_folder
    from launcher.models.build import head_config_kwargs, random_init_config
    from launcher.models.reward import class_for_method

    start_deepspeed(dist_info)
    ds_config = run_deepspeed_config(cfg, dist_info, precision)
    dtype = precision.compute_dtype if precision.low_precision else precision.param_dtype
    m = cfg.model
    folder = safetensors_folder(m.name_or_path) if m.name_or_path else None
    if m.name_or_path and folder is None:
        hf_ds_config = HfDeepSpeedConfig(ds_config)  # registered (weakly) with transformers: kept on the model
        model = class_for_method(cfg, AutoModelForCausalLM).from_pretrained(
            m.name_or_path, dtype=dtype, attn_implementation=attn_implementation,
            trust_remote_code=m.trust_remote_code, **head_config_kwargs(cfg, tokenizer))
    else:
        from transformers import AutoConfig

        config = (AutoConfig.from_pretrained(folder, trust_remote_code=m.trust_remote_code,
                                             **head_config_kwargs(cfg, tokenizer)) if folder
                  else random_init_config(cfg, tokenizer))
        if folder is None:
            torch.manual_seed(cfg.train.seed)
        auto_class = class_for_method(cfg, AutoModelForCausalLM)
        import_model_classes(auto_class, config)
        # Our own zero.Init (transformers' would also draw the tied output matrix that tying discards, shifting
        # every later random number away from the plain build's).
        with initialization.no_init_weights(), deepspeed.zero.Init(config_dict_or_path=ds_config,
                                                                    dtype=zero_init_dtype(dtype, ds_config)):
            model = auto_class.from_config(
                config, attn_implementation=attn_implementation, dtype=dtype,
                trust_remote_code=m.trust_remote_code)
        for name in getattr(model, "all_tied_weights_keys", None) or {}:
            model.get_parameter(name)._is_hf_initialized = True
        if folder is not None:
            load_zero3_from_safetensors(model, folder, dist_info.is_main)
        initialize_missing_zero3(model)
        model.tie_weights()
        if not model.can_generate():  # a reward model (launcher.models.reward)
            pass
        elif folder is not None and (folder / "generation_config.json").is_file():
            from transformers import GenerationConfig

            model.generation_config = GenerationConfig.from_pretrained(folder)
        else:
            model.generation_config.eos_token_id = tokenizer.eos_token_id
            model.generation_config.pad_token_id = tokenizer.pad_token_id
        torch.set_rng_state(broadcast_object(torch.get_rng_state()))
        hf_ds_config = HfDeepSpeedConfig(ds_config)
    setattr(model, ZERO3_BUILT_ATTR, hf_ds_config)
    if dist_info.is_main:
        log.info("model: partitioned over %d ranks as it was %s (ZeRO-3 zero.Init), parameters in %s",
                 dist_info.world_size, "loaded" if m.name_or_path else "built", str(dtype).replace("torch.", ""))
    return model


def initialize_missing_zero3(model: nn.Module) -> None:
    """transformers' ZeRO-3 init (one gathered module at a time, rank 0 draws) for what is not marked
    initialized: everything for random init, what the checkpoint lacked otherwise."""
    from transformers.integrations.deepspeed import initialize_weights_zero3

    initialize_weights_zero3(model)


@torch.no_grad()
def load_zero3_from_safetensors(model: nn.Module, folder: Path, is_main: bool) -> None:
    """Collective. Each partitioned parameter gathered alone; rank 0 reads its tensor from the checkpoint (plain
    reads of just its bytes) and copies it in, and leaving the gather partitions it again on every rank
    (modifier_rank=0 broadcasts it)."""
    import deepspeed

    from launcher.engines.loading import SafetensorsReader, checkpoint_index, checkpoint_key, tied_names

    index = checkpoint_index(folder)
    tied = tied_names(model)
    missing = []
    readers: dict[Path, Any] = {}
    for name, param in model.named_parameters():
        key = checkpoint_key(name)
        if key not in index:
            if name not in tied:
                missing.append(key)
            continue
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0):
            if is_main:
                if index[key] not in readers:
                    readers[index[key]] = SafetensorsReader(index[key])
                tensor = readers[index[key]].read(key)
                if tuple(tensor.shape) != tuple(param.shape):
                    raise RuntimeError(f"{folder}: {key} has shape {tuple(tensor.shape)}, the model expects"
                                       f" {tuple(param.shape)}")
                param.copy_(tensor)
                del tensor
        param._is_hf_initialized = True
    if missing:
        log.warning("ZeRO-3 loading: %d parameters not in %s, initialized like from_pretrained does: %s",
                    len(missing), folder, missing[:5])


def save_zero3_base(model: nn.Module, directory: Path, tokenizer, is_main: bool) -> None:
    """Collective. Rank 0 writes a partitioned model as an HF folder, one gathered parameter at a time."""
    import deepspeed

    from launcher.engines.streaming import ShardedSafetensorsWriter
    from launcher.files import apply_umask
    from launcher.models.tokenizers import save_tokenizer

    writer = ShardedSafetensorsWriter(directory) if is_main else None
    for name, param in model.named_parameters():
        with deepspeed.zero.GatheredParameters([param]):
            if writer is not None:
                writer.add(name, param.detach().cpu().clone())
    if writer is None:
        return
    writer.close()
    model.config.save_pretrained(directory)
    if model.can_generate():
        model.generation_config.save_pretrained(directory)
    save_tokenizer(tokenizer, directory)
    apply_umask(directory)


class DeepSpeedEngine(Engine):
    """ZeRO-1/2/3 via DeepSpeed; ``model`` stays the unwrapped HF/PEFT model (partitioned under ZeRO-3).

    Optimizer state (and gradients from ZeRO-2, parameters under ZeRO-3) sharded over ranks; fp32 master
    weights; DeepSpeed's bf16 mode when the precision policy computes in bf16 (a GPU), fp32 otherwise; with
    offload the optimizer state (and ZeRO-3's parameters) live in CPU memory. Checkpoint: every rank its shard.
    """

    name = "deepspeed"

    def __init__(self, cfg: Config, model: nn.Module, dist_info: DistInfo, total_steps: int,
                 loss_module: LossFactory, precision: Precision):
        import deepspeed

        self.cfg = cfg
        self.dist = dist_info
        self.zero_stage = cfg.parallelism.zero_stage
        self.lora = cfg.method.finetuning in ("lora", "oft")  # an adapter: frozen base left out of checkpoints
        self.precision = precision
        on_gpu = dist_info.device.type == "cuda"
        bf16 = precision.bf16
        grad_accum = resolve_grad_accum(cfg, dist_info.world_size)
        self.ds_config = build_deepspeed_config(cfg, dist_info.world_size, grad_accum, on_gpu, bf16, precision.fp16)
        start_deepspeed(dist_info)

        self.loaded_sharded = hasattr(model, ZERO3_BUILT_ATTR) or hasattr(
            getattr(model, "get_base_model", lambda: None)(), ZERO3_BUILT_ATTR)
        # Partitioned as it was built (build_zero3_model): its partitions are on the device already.
        self.model = model if self.loaded_sharded else model.to(dist_info.device)
        loss_module = loss_module(self.model, cfg)
        # Built before DeepSpeed partitions the parameters (ZeRO-3 is applied to the built model here:
        # every rank built the same seeded weights, so partitioning after the build is exact), so the
        # decay/no-decay split still sees real shapes.
        optimizer = build_zero_optimizer(self.model, cfg.method, on_gpu, cfg.parallelism.offload)
        self.scheduler = build_scheduler(optimizer, cfg.train, total_steps)
        self.ds, self.optimizer, _, _ = deepspeed.initialize(
            model=loss_module, optimizer=optimizer, config=self.ds_config, dist_init_required=False,
        )
        self.module = self.ds
        if dist_info.is_main:
            log.info("deepspeed: ZeRO-%d%s, %s, micro batch %d x accumulation %d x world %d",
                     self.zero_stage, " + CPU offload" if cfg.parallelism.offload else "",
                     "bf16" if bf16 else ("fp16 with DeepSpeed's dynamic loss scaling" if precision.fp16 else "fp32"),
                     cfg.train.micro_batch_size, grad_accum, dist_info.world_size)

    # ------------------------------------------------------------------ the step

    @property
    def forward_is_collective(self) -> bool:
        """ZeRO-3 gathers parameters in forward: every rank must run the same number of forwards."""
        return self.zero_stage == 3

    def accumulation_context(self, is_last_micro_batch: bool):
        self.ds.set_gradient_accumulation_boundary(is_last_micro_batch)
        return contextlib.nullcontext()

    def backward(self, loss: torch.Tensor) -> None:
        # The loop's loss is already the step's token mean (times world size, undone by DeepSpeed's average).
        self.ds.backward(loss, scale_wrt_gas=False)

    def step(self) -> float:
        self.ds.set_gradient_accumulation_boundary(True)
        self.ds.step()
        self.scheduler.step()
        norm = self.ds.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def train(self) -> None:
        self.ds.train()

    def eval(self) -> None:
        self.ds.eval()

    # inference_context: the default (nothing to do); ZeRO-3's hooks gather weights in any forward.

    def report(self) -> dict[str, Any]:
        # A ZeRO-3 parameter keeps only its partition (ds_tensor) on this rank; whole ones have none.
        sharded = sum(1 for p in self.model.parameters()
                      if hasattr(p, "ds_tensor") and 0 < p.ds_tensor.numel() < p.ds_numel)
        return {"engine": "deepspeed", "zero_stage": self.zero_stage, "offload": self.cfg.parallelism.offload,
                "world_size": self.dist.world_size, "zero3_partitioned_params": sharded,
                "total_params": sum(1 for _ in self.model.parameters()), "loaded_sharded": self.loaded_sharded,
                "loss_scaling": bool(self.ds_config["fp16"]["enabled"])}

    # ------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, directory: Path, extra: dict[str, Any]) -> None:
        """Every rank writes its own ZeRO shard (optimizer and, under ZeRO-3, parameters) into ``directory``."""
        directory = Path(directory)
        self.ds.save_checkpoint(str(directory), tag=DEEPSPEED_TAG, save_latest=False,
                                exclude_frozen_parameters=self.lora)
        if self.dist.is_main:
            torch.save({"scheduler": self.scheduler.state_dict(), "engine": "deepspeed",
                        "zero_stage": self.zero_stage, **extra}, directory / STATE_FILE)

    def load_checkpoint(self, directory: Path) -> dict[str, Any]:
        directory = Path(directory)
        require_checkpoint_kind(directory, DEEPSPEED_TAG, "DeepSpeed")
        path, _ = self.ds.load_checkpoint(str(directory), tag=DEEPSPEED_TAG, load_module_strict=not self.lora,
                                          load_optimizer_states=True, load_lr_scheduler_states=False)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load the checkpoint in {directory}")
        state = torch.load(directory / STATE_FILE, map_location="cpu", weights_only=False)
        self.scheduler.load_state_dict(state["scheduler"])
        return state

    # ------------------------------------------------------------------ final model

    def full_state_dict(self) -> dict[str, torch.Tensor]:
        """Collective. Rank 0 gets the model's (or, for LoRA, the trainable adapter's) full weights; others {}."""
        if self.zero_stage == 3:
            # 16-bit under bf16, fp32 otherwise; keys belong to the loss wrapper ("model." + HF keys).
            state = self.ds._zero3_consolidated_16bit_state_dict(exclude_frozen_parameters=self.lora)
            return strip_wrapper_prefix(state) if self.dist.is_main else {}
        if not self.dist.is_main:
            return {}
        # ZeRO-1/2 keep whole (updated) parameters on every rank.
        return {n: p.detach().cpu() for n, p in self.model.state_dict().items()}
