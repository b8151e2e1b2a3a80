"""Memory per GPU of a run, estimated before it waits in a queue: weights, gradients, optimizer, activations.

A rule-of-thumb model (ZeRO paper accounting; Korthikanti et al. for activations), meant to catch runs that
cannot fit by a wide margin, not to predict the allocator to the last gigabyte:

- weights: bytes/param of the training dtype; gradients: the same, for trainable parameters only;
- AdamW: fp32 master copy + two fp32 moments = 12 bytes/param in mixed precision, 8 in fp32; with
  method.pure_bf16 no master copy and bf16 moments: 4 (weights and gradients 2 each: half of mixed precision's
  16 bytes/param in all); the other optimizers by their state (``optimizer_bytes``);
- sharding over the world: ZeRO-1 shards the optimizer, ZeRO-2 also gradients, ZeRO-3/FSDP also weights;
  offload moves optimizer states (and with ZeRO-3/FSDP the sharded weights' master copy) to CPU;
- activations per layer ~ 34 x seq x batch x hidden bytes in 16-bit (attention with a fused kernel), about
  2 x seq x batch x hidden with gradient checkpointing (plus one layer recomputed at a time).
Loading (``estimate_load_memory``) is counted apart: the peak before training starts, host RAM per node and
GPU memory, by how the strategy builds the model (launcher.engines.model_build.sharded_loading):
- a full copy per rank (DDP, ZeRO-1/2, DoRA): every rank builds the fp32 model in host RAM and moves it whole
  to its GPU; the node also holds the checkpoint's pages (page cache, shared by its ranks);
- FSDP (meta device) and ZeRO-3 (zero.Init): a rank holds its shard, plus one full tensor (FSDP: a module's
  temporary while initializing) or one gathered module (ZeRO-3) at a time; the node holds one copy of the
  checkpoint in its file dtype in the page cache. With offload the shards live in host RAM instead.
All functions are pure.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from launcher.config.parallelism import PRESETS, sharding_stage
from launcher.config.schema import Config

GIB = 1024**3
CUDA_OVERHEAD_GB = 1.5
"""CUDA context, NCCL buffers and allocator slack, per GPU."""


@dataclass
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied: bool

    @classmethod
    def from_hf_config(cls, hf: dict) -> "ModelShape":
        hf = hf.get("text_config", hf)  # VLMs nest the language model's config
        hidden = int(hf.get("hidden_size") or hf.get("d_model") or hf.get("n_embd"))
        heads = int(hf.get("num_attention_heads") or hf.get("n_head") or 1)
        return cls(
            hidden=hidden,
            layers=int(hf.get("num_hidden_layers") or hf.get("n_layer")),
            intermediate=int(hf.get("intermediate_size") or 4 * hidden),
            vocab=int(hf.get("vocab_size") or 32000),
            heads=heads,
            kv_heads=int(hf.get("num_key_value_heads") or heads),
            tied=bool(hf.get("tie_word_embeddings", False)),
        )

    def largest_tensor(self) -> int:
        """Elements of the largest single tensor: the embedding (or an MLP matrix)."""
        return max(self.vocab * self.hidden, self.hidden * self.intermediate)

    def layer_params(self) -> int:
        h = self.hidden
        return 2 * h * h + 2 * h * self.kv_dim() + 3 * h * self.intermediate + 2 * h

    def kv_dim(self) -> int:
        return self.hidden * self.kv_heads // self.heads

    def num_params(self) -> int:
        h, i = self.hidden, self.intermediate
        attention = 2 * h * h + 2 * h * self.kv_dim()
        mlp = 3 * h * i  # gate, up, down (SwiGLU)
        per_layer = attention + mlp + 2 * h
        embeddings = self.vocab * h * (1 if self.tied else 2)
        return self.layers * per_layer + embeddings + h

    def num_lora_params(self, rank: int, target_modules) -> int:
        h, i, kv = self.hidden, self.intermediate, self.kv_dim()
        shapes = {"q_proj": (h, h), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (h, h),
                  "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}
        names = shapes if target_modules == "all-linear" else [m for m in target_modules if m in shapes]
        return self.layers * sum(rank * (shapes[n][0] + shapes[n][1]) for n in names)


@dataclass
class MemoryEstimate:
    params: int
    trainable: int
    weights_gb: float
    grads_gb: float
    optimizer_gb: float
    activations_gb: float
    overhead_gb: float

    @property
    def total_gb(self) -> float:
        return self.weights_gb + self.grads_gb + self.optimizer_gb + self.activations_gb + self.overhead_gb

    def breakdown(self) -> str:
        return (f"weights {self.weights_gb:.1f} + grads {self.grads_gb:.1f} + optimizer {self.optimizer_gb:.1f}"
                f" + activations {self.activations_gb:.1f} + overhead {self.overhead_gb:.1f}"
                f" = {self.total_gb:.1f} GB")


def _dtype_bytes(dtype: str, on_gpu: bool) -> int:
    if dtype == "float32" or (dtype == "auto" and not on_gpu):
        return 4
    return 2


def estimate_memory_per_gpu(cfg: Config, shape: ModelShape) -> MemoryEstimate:
    c, p, m, t = cfg.cluster, cfg.parallelism, cfg.method, cfg.train
    world = c.nodes * c.nproc_per_node
    wb = 2 if m.pure_bf16 else _dtype_bytes(cfg.model.dtype, on_gpu=c.gpus_per_node > 0)
    params = shape.num_params()
    lora = m.finetuning == "lora"
    trainable = shape.num_lora_params(m.lora.r, m.lora.target_modules) if lora else params
    if m.optimizer == "badam":  # one block (decoder layer) trains at a time
        trainable = shape.layer_params()

    stage = sharding_stage(p)
    shard_weights = world if stage >= 3 else 1
    shard_grads = world if stage >= 2 else 1
    shard_opt = world if stage >= 1 else 1

    if m.finetuning == "freeze":  # the chosen layers' share of the parameters (embeddings etc. counted whole)
        trainable = int(params * min(abs(m.freeze.trainable_layers), shape.layers) / max(shape.layers, 1))
    # QLoRA: the frozen base in 4 bits (+ ~3% for nf4 block scales with double quantization) or 8 bits
    base_bytes = {"4bit": 0.53, "8bit": 1.03}.get(m.lora.quantize, wb) if lora else wb
    weights = params * base_bytes / shard_weights + (trainable * wb / shard_weights if lora else 0)
    grads = trainable * wb / shard_grads
    optimizer = 0.0 if p.offload else optimizer_bytes(cfg, shape, trainable, wb) / shard_opt

    # parallelism.sequence_parallel: each rank holds 1/N of every row's tokens (the attention's all-to-all
    # buffers are the size of q, k, v: counted in the 34 x seq x hidden of a layer).
    seq, batch, h = cfg.data.cutoff_len / max(p.sequence_parallel, 1), t.micro_batch_size, shape.hidden
    per_layer_full = 34 * seq * batch * h * wb / 2
    if t.gradient_checkpointing:
        activations = shape.layers * 2 * seq * batch * h * wb / 2 + per_layer_full
    else:
        activations = shape.layers * per_layer_full
    # The chunked LM head keeps loss_chunk_size x vocab fp32 logits (and their gradient) alive at a time.
    activations += 2 * min(t.loss_chunk_size, seq * batch) * shape.vocab * 4
    return MemoryEstimate(
        params=params, trainable=trainable, weights_gb=weights / GIB, grads_gb=grads / GIB,
        optimizer_gb=optimizer / GIB, activations_gb=activations / GIB, overhead_gb=CUDA_OVERHEAD_GB,
    )


def optimizer_bytes(cfg: Config, shape: ModelShape, trainable: int, wb: int) -> float:
    """Bytes of optimizer state (with the fp32 master copy of mixed precision) for ``trainable`` parameters.

    States are fp32, or bf16 with method.pure_bf16 (no master copy then). adamw: two moments; sgd: as before
    (the master copy only); adafactor: the factored second moment (rows + columns: about nothing); the 8-bit
    AdamWs: two 1-byte moments; adam_mini: the first moment (one second moment per head or neuron); muon: one
    momentum for the hidden matrices, two moments for the rest (embeddings); GaLore/APOLLO: the targeted linear
    weights' two moments at rank/hidden of their size (projected on their smaller side, the hidden size), the
    rest two full moments; badam: an fp32 copy and two fp32 moments of one block (``trainable`` is one layer)."""
    m = cfg.method
    master = 4 if wb == 2 and not m.pure_bf16 else 0
    state = 2 if m.pure_bf16 else 4
    opt = m.optimizer
    if opt == "adamw":
        return trainable * (master + 2 * state)
    if opt == "sgd":
        return trainable * (4 if wb == 2 else 0)
    if opt == "adafactor":
        return trainable * master
    if opt in ("adamw_8bit", "paged_adamw_8bit"):
        return trainable * (master + 2)
    if opt == "adam_mini":
        return trainable * (master + state)
    if opt == "badam":
        return trainable * (4 + 2 * 4)
    hidden_matrices = shape.layers * (shape.layer_params() - 2 * shape.hidden)
    hidden_matrices = min(hidden_matrices, trainable)
    rest = trainable - hidden_matrices
    if opt == "muon":
        return trainable * master + hidden_matrices * state + rest * 2 * state
    # GaLore / APOLLO
    rank = m.galore.rank if opt.startswith("galore") else m.apollo.rank
    moment = 1 if opt == "galore_adamw_8bit" else state
    projected = hidden_matrices * min(1.0, rank / shape.hidden)
    return trainable * master + (projected + rest) * 2 * moment


@dataclass
class LoadEstimate:
    host_gb_per_node: float
    """Peak host RAM of one node's ranks while loading (page cache of the checkpoint included)."""
    gpu_gb: float
    """Peak memory of one GPU at load, before the first step."""
    how: str

    def describe(self) -> str:
        return (f"loading: about {self.host_gb_per_node:.0f} GB of host RAM per node and {self.gpu_gb:.1f} GB per GPU"
                f" ({self.how})")


FILE_BYTES = 2
"""Bytes per parameter of a checkpoint on disk (bf16/fp16 safetensors: what hub models ship)."""


def estimate_load_memory(cfg: Config, shape: ModelShape) -> LoadEstimate:
    from launcher.engines.model_build import sharded_loading

    c, p = cfg.cluster, cfg.parallelism
    world, per_node = c.nodes * c.nproc_per_node, c.nproc_per_node
    on_gpu = c.gpus_per_node > 0
    params = shape.num_params()
    file = params * FILE_BYTES if cfg.model.name_or_path else 0  # page cache, shared by the node's ranks
    largest = shape.largest_tensor()
    mode = sharded_loading(cfg)
    if mode is None:
        # Every rank builds the fp32 model in host RAM, then moves it whole to its GPU.
        host = per_node * 4 * params + file
        gpu = 4 * params if on_gpu else 0
        how = (f"parallelism={p.name}: every rank builds the whole fp32 model ({4 * params / GIB:.0f} GB) and moves"
               " it to its GPU")
    else:
        # ZeRO-3 in DeepSpeed's bf16 mode stores bf16 partitions; FSDP keeps fp32 shards (its master weights).
        wb = 2 if (mode == "zero3" and on_gpu and cfg.model.dtype in ("auto", "bfloat16", "float16")) else 4
        shard = wb * params / world
        if mode == "meta":
            # Random init: one full fp32 tensor per rank at a time on the host, its slice copied to the GPU;
            # a checkpoint: each rank reads only its rows.
            host_temp = 4 * largest if not file else 4 * largest / world
            gpu_temp = 4 * largest / world
        else:
            # zero.Init gathers one module at a time on the device; a checkpoint's tensor is read on the host.
            host_temp = wb * largest if file else 0
            gpu_temp = wb * max(largest, shape.layer_params())
        host = file + per_node * host_temp + (per_node * shard if p.offload else 0)
        gpu = (gpu_temp + (0 if p.offload else shard)) if on_gpu else 0
        way = ("built on the meta device, each rank reads only its FSDP shards" if mode == "meta"
               else "partitioned as it loads (ZeRO-3 zero.Init)")
        where = " in host RAM (offload)" if p.offload else ""
        how = f"parallelism={p.name}: {way}, {shard / GIB:.1f} GB shard per rank{where}"
    return LoadEstimate(host_gb_per_node=host / GIB, gpu_gb=gpu / GIB, how=how)


def load_fits(cfg: Config, shape: ModelShape) -> bool:
    c = cfg.cluster
    load = estimate_load_memory(cfg, shape)
    if c.mem_gb is not None and load.host_gb_per_node > c.mem_gb:
        return False
    return c.gpu_memory_gb is None or c.gpus_per_node == 0 or load.gpu_gb <= c.gpu_memory_gb


def fits(cfg: Config, shape: ModelShape, limit_gb: float) -> bool:
    """Training state and loading both fit."""
    return estimate_memory_per_gpu(cfg, shape).total_gb <= limit_gb and load_fits(cfg, shape)


# What to try, in order of least change to the run: each is (override shown to the user, config change).
ALTERNATIVES = (
    ("train.gradient_checkpointing=true", lambda c: _set(c, "train", gradient_checkpointing=True)),
    ("parallelism=zero2", lambda c: _preset(c, "zero2")),
    ("parallelism=fsdp", lambda c: _preset(c, "fsdp")),
    ("parallelism=zero3", lambda c: _preset(c, "zero3")),
    ("parallelism=zero3 train.gradient_checkpointing=true",
     lambda c: _set(_preset(c, "zero3"), "train", gradient_checkpointing=True)),
    ("parallelism=zero3_offload", lambda c: _preset(c, "zero3_offload")),
    ("method=lora", lambda c: _set(c, "method", name="lora", finetuning="lora")),
    ("method=lora train.gradient_checkpointing=true",
     lambda c: _set(_set(c, "method", name="lora", finetuning="lora"), "train", gradient_checkpointing=True)),
)


def _preset(cfg: Config, name: str) -> Config:
    """``cfg`` under ``parallelism=NAME``: the preset's row of launcher.config.parallelism.PRESETS."""
    return _set(cfg, "parallelism", name=name, **PRESETS[name].keys())


def _set(cfg: Config, group: str, **changes) -> Config:
    return dataclasses.replace(cfg, **{group: dataclasses.replace(getattr(cfg, group), **changes)})


def suggest_fits(cfg: Config, shape: ModelShape, limit_gb: float, max_suggestions: int = 2) -> list:
    """Overrides (as the user would type them) under which the run trains and loads, cheapest change first;
    when no single change does, the fewest nodes (up to 64) that make ZeRO-3 (then its offload) fit."""
    found = []
    for override, change in ALTERNATIVES:
        candidate = change(cfg)
        if candidate == cfg:
            continue
        if fits(candidate, shape, limit_gb):
            found.append(override)
        if len(found) >= max_suggestions:
            break
    if found:
        return found
    for override, change in ALTERNATIVES[3:6]:  # zero3, zero3 + checkpointing, zero3_offload
        nodes = cfg.cluster.nodes
        while nodes < 64:
            nodes *= 2
            candidate = _set(change(cfg), "cluster", nodes=nodes)
            if fits(candidate, shape, limit_gb):
                return [f"{override} cluster.nodes={nodes}"]
    return []
