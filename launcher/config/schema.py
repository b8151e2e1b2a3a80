"""Typed configuration: what a run is, validated once in the submitting process.

Hydra composes a plain dict at the edge (``launcher.config.compose``); ``parse_config`` turns it into these
dataclasses, rejecting unknown keys, wrong types and impossible combinations with one-line messages that
name the key. Ranks never see Hydra: they read the resolved ``config.yaml`` from the run dir and call
``load_run_config``.
"""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

from launcher.config.parallelism import PRESETS, STRATEGIES, shards_parameters
from launcher.config.optimizers import OPTIMIZERS, optimizer_combination_problem
from launcher.errors import ConfigError
from launcher.paths import CONFIG_FILE


# --------------------------------------------------------------------------------------------- groups


@dataclass
class ModelConfig:
    name: str = "tiny-qwen2"
    """Short name used in run dir names."""
    name_or_path: Optional[str] = None
    """A hub id or a local folder with a HF model. None: build a random-init model from ``arch`` + ``config``."""
    arch: str = "qwen2"
    """model_type for random init (qwen2, llama, mistral, qwen3); ignored when name_or_path is set."""
    config: dict = field(default_factory=dict)
    """Architecture overrides for random init (hidden_size, num_hidden_layers, ...)."""
    tokenizer: Optional[str] = None
    """Tokenizer folder or hub id; defaults to name_or_path. ``builtin:chars`` and ``builtin:qwen`` are offline
    (and ``builtin:qwen2_audio``: Qwen's with Qwen2-Audio's audio tokens)."""
    dtype: str = "auto"
    """auto (bf16 on a GPU that has it, fp32 on CPU), float32, bfloat16, float16."""
    attn_implementation: str = "auto"
    """auto (flash_attention_2 when installed and supported, else sdpa), sdpa, eager, flash_attention_2."""
    trust_remote_code: bool = False
    """Let Hugging Face run the model's own Python code from its folder or hub repo (models not in transformers); only
    for sources you trust."""
    freeze_vision_tower: bool = True
    """VL models: keep the vision tower (patch embedding and blocks) frozen (LLaMA-Factory's default)."""
    freeze_projector: bool = True
    """VL models: keep the merger/projector (and Qwen3-VL's deepstack mergers) frozen (LLaMA-Factory's default)."""
    freeze_language_model: bool = False
    """VL models: keep the language model frozen (train only what the other two switches leave on)."""


@dataclass
class DatasetEntry:
    """One dataset of a mix: a name from dataset_info.json / conf/data, with its own share."""

    name: str
    """A dataset of dataset_info.json (in data.dataset_dir)."""
    max_samples: Optional[int] = None
    """Cap on this dataset's rows; None: all (data.max_samples still applies)."""
    weight: Optional[float] = None
    """Share of this dataset with data.mix_strategy=interleave (drawn with probability ~ weight); None: 1."""


@dataclass
class DataConfig:
    name: str = "tasks"
    """Short name used in run dir names."""
    dataset_dir: str = "data"
    """Folder holding dataset_info.json and the files it names (LLaMA-Factory layout). Relative to the repo."""
    datasets: list = field(default_factory=list)
    """Dataset names (strings) or {name, max_samples, weight} entries; mixed in that order."""
    eval_datasets: list = field(default_factory=list)
    """Held-out datasets by name; when empty, ``val_size`` carves a split from the training mix."""
    val_size: Union[int, float] = 0.0
    """Held out of the training mix for evaluation, as LLaMA-Factory reads it: a float is a fraction in [0, 1)
    (0.05), an integer a count of samples (200). A float >= 1 is refused."""
    template: Optional[str] = None
    """Named chat template (chatml, qwen, qwen3_nothink, llama3, mistral, plain; qwen2_vl, qwen3_vl, qwen3_vl_nothink
    for images; qwen2_audio for Qwen2-Audio's audio) used when the tokenizer has none, or to force one. LLaMA-Factory's names render as LF's templates do:
    qwen adds its default system prompt ("You are Qwen, created by Alibaba Cloud. ...") where a sample has none."""
    cutoff_len: int = 1024
    """Tokens per sample: longer ones are cut (prompt and answer share the budget, as in LLaMA-Factory); with packing,
    the length of a packed row. Sets activation memory with micro_batch_size."""
    train_on_prompt: bool = False
    """Train on the prompt tokens too (by default only the answers carry labels)."""
    mask_history: bool = False
    """Multi-turn rows: train only on the last answer; the last turn also gets the cutoff_len budget first."""
    packing: bool = False
    """Pack samples into rows of cutoff_len; attention stays within each sample."""
    lenient: bool = False
    """Drop (and count) samples that end up with no trained token, and skip (and count) malformed rows,
    instead of raising."""
    max_samples: Optional[int] = None
    """Cap on every dataset (after per-dataset caps)."""
    mix_strategy: str = "concat"
    """concat, or interleave (uses the entries' weights)."""
    cache_dir: Optional[str] = None
    """Where tokenized data is cached; default ``.cache/launcher/data`` under the repo."""
    num_proc: Optional[int] = None
    """Worker processes that read, format and tokenize; default: the CPUs the job has (SLURM_CPUS_PER_TASK on a
    node, else the process's CPU affinity). 1 runs in the calling process."""
    preprocess_batch_size: int = 1000
    """Rows per batch handed to a worker."""
    use_cache: bool = True
    """Reuse tokenized data from cache_dir when files, tokenizer, template and options are unchanged."""
    image_max_pixels: int = 768 * 768
    """VL: images with more pixels are scaled down (by the square root of the ratio) first, as LLaMA-Factory does."""
    image_min_pixels: int = 32 * 32
    """VL: images with fewer pixels are scaled up first."""
    video_max_pixels: int = 256 * 256
    """VL videos: frames with more pixels are scaled down first (LLaMA-Factory's default); with the frame count,
    what decides a video's tokens."""
    video_min_pixels: int = 16 * 16
    """VL videos: frames with fewer pixels are scaled up first."""
    video_fps: float = 2.0
    """VL videos: frames sampled per second of video (evenly spread), at most video_maxlen in all."""
    video_maxlen: int = 128
    """VL videos: the most frames sampled from one video (LLaMA-Factory's default); lower it for long videos."""
    use_audio_in_video: bool = False
    """Qwen2.5-Omni thinker: each ``<video>`` and the ``<audio>`` after it (the video's sound: its own file, or a
    separate one) become one span, frames and audio interleaved in 2 s chunks with time-aligned positions
    (LLaMA-Factory's use_audio_in_video); rows need as many audios as videos."""


@dataclass
class LoraConfig:
    r: int = 8
    """Rank of the adapters: trainable parameters and adapter memory grow linearly with it."""
    alpha: int = 16
    """Rule of thumb: twice the rank."""
    dropout: float = 0.0
    """Dropout on each adapter's input, in [0, 1); 0: off."""
    target_modules: Any = "all-linear"
    """all-linear, or a list of module names (q_proj, v_proj, ...)."""
    use_dora: bool = False
    """DoRA: learn each weight's magnitude apart from its LoRA-updated direction (peft's use_dora); slower per step."""
    use_rslora: bool = False
    """rsLoRA: scale the update by alpha/sqrt(r) instead of alpha/r, so large ranks keep learning."""
    modules_to_save: Optional[list] = None
    """Modules trained in full and saved with the adapter (embed_tokens, lm_head, ...); None: adapters only."""
    init: str = "default"
    """How the adapters start (peft's init_lora_weights): default (A random, B zero), gaussian, pissa (the top
    singular vectors of each weight; the base keeps the residual), pissa_niter_N (fast SVD with N iterations),
    olora (QR). PiSSA and OLoRA adapters are converted back to plain LoRA adapters of twice the rank on save
    (peft's path_initial_model_for_weight_conversion), so they load onto the unchanged base."""
    quantize: Optional[str] = None
    """QLoRA: 4bit (bitsandbytes nf4, double quantization, bf16 compute) or 8bit (LLM.int8) for the frozen base;
    needs a CUDA GPU, bitsandbytes and a pretrained model (model.name_or_path). null: the base in full precision.
    Export merges the adapter into the unquantized base."""
    plus_lr_ratio: Optional[float] = None
    """LoRA+ (Hayou et al. 2024): the B matrices train at plus_lr_ratio x method.lr (16 is the paper's usual
    choice; LLaMA-Factory's loraplus_lr_ratio); None: plain LoRA. Through peft's create_loraplus_optimizer."""
    include_vision: bool = False
    """VL models: let target_modules reach the vision tower too (by default LoRA adapts the language model only)."""
    double_quantization: bool = True
    """QLoRA 4bit: quantize the per-block quantization constants too (bitsandbytes' bnb_4bit_use_double_quant; about
    0.4 bit per weight saved; LLaMA-Factory's double_quantization). Ignored by 8bit, refused without quantize=4bit."""


@dataclass
class DpoConfig:
    beta: float = 0.1
    """Strength of the preference term: how far the policy may move from the reference (sigmoid, ipo, hinge); SimPO's
    reward scale; ORPO's weight of the odds-ratio term."""
    label_smoothing: float = 0.0
    """Conservative DPO: the assumed fraction of flipped labels, in [0, 0.5); sigmoid and simpo only."""
    loss_type: str = "sigmoid"
    """sigmoid (DPO), ipo, hinge: against a reference model; simpo, orpo: reference-free."""
    simpo_gamma: float = 0.5
    """SimPO's target reward margin (gamma); the loss is -logsigmoid(beta * (mean logp margin) - gamma)."""
    precompute_ref_log_probs: bool = False
    """Score every pair with the reference once before training, then train with no reference in memory."""
    probe_pairs: int = 8
    """Training pairs whose reward accuracy/margin are logged before and after training (0: off); never more than
    the run trains on. Each costs forwards before and after (the dry run counts them)."""


@dataclass
class RmConfig:
    probe_pairs: int = 8
    """Training pairs whose pair accuracy and margin are logged before and after training (0: off)."""


@dataclass
class GrpoConfig:
    """Group Relative Policy Optimization (method.name=grpo): G sampled completions per prompt, scored by reward
    functions, each completion's advantage its reward against its group's (launcher.training.objectives.grpo)."""

    num_generations: int = 4
    """G: completions sampled per prompt (at least 2: an advantage is a reward against its group's mean). A
    micro-batch holds train.micro_batch_size prompts, so micro_batch_size x G sequences."""
    max_completion_length: int = 16
    """Most tokens generated per completion (tokens); a completion cut here is still scored (truncated)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (> 0); the loss scores their tokens at it too (logits / temperature, as
    TRL does); the held-out reward is scored greedily."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts: keep the smallest set of tokens whose probability reaches top_p."""
    rewards: list = field(default_factory=lambda: ["exact_match"])
    """Reward functions, summed with reward_weights: exact_match (1 when the completion equals the row's answer,
    the dataset's output column / last assistant turn, stripped), format (1 when the stripped completion fully
    matches format_pattern), length (1 - |tokens - length_target| / max_completion_length, not below 0),
    ``module:function`` (called as f(prompt=str, completion=str, row=dict) -> float; the module importable from
    the run's code), ``rm:RUN_DIR`` (the score of a method=rm run's saved model)."""
    reward_weights: list = field(default_factory=list)
    """One weight per entry of rewards; empty: 1.0 each."""
    format_pattern: str = r"\S+"
    """The ``format`` reward's regular expression (Python re.fullmatch on the stripped completion)."""
    length_target: int = 8
    """The ``length`` reward's ideal completion length (tokens)."""
    reward_errors: str = "raise"
    """raise: a reward function that raises stops the run, naming the function and the row; zero: it scores 0
    and the failures are counted (reward_errors/<name> in metrics.jsonl)."""
    loss_type: str = "dapo"
    """How per-token losses become the step's loss, as TRL names them: grpo (mean over each completion's tokens,
    then over completions), dr_grpo (sum over tokens / (completions x max_completion_length)), dapo (sum over
    tokens / the step's completion tokens, all ranks), bnpo (mean over each micro-batch's tokens, then over the
    micro-batches of the step)."""
    scale_rewards: str = "group"
    """group: advantage = (r - group mean) / (group std + 1e-4); batch: divided by the std of the step's rewards
    instead; none: not divided (Dr. GRPO)."""
    epsilon: float = 0.2
    """Lower clip of the policy ratio: the ratio is clipped to [1 - epsilon, 1 + epsilon_high]."""
    epsilon_high: Optional[float] = None
    """Upper clip of the ratio (DAPO's clip-higher uses 0.28); None: epsilon."""
    beta: float = 0.0
    """Weight of the KL penalty to the reference (k3 estimator per token); 0: no reference is kept or scored.
    The reference is a frozen copy (full) or the base with adapters off (LoRA)."""
    num_iterations: int = 1
    """Optimizer steps on each generation batch (TRL's num_iterations, mu): the first uses fresh completions,
    the others reuse them against the log-probs of the policy that sampled them (clipped ratio)."""
    eval_prompts: int = 32
    """Held-out prompts answered greedily before and after training (and every train.eval_every steps) and
    scored by the reward functions (eval/reward, eval/<function>); 0: off."""



@dataclass
class PpoConfig:
    """Proximal Policy Optimization with a reward model (method.name=ppo, LLaMA-Factory's stage: ppo): one
    completion per prompt sampled from the policy, scored by a method=rm run's model, per-token rewards with a KL
    penalty to the reference, GAE on a value head that shares the policy's backbone
    (launcher.training.objectives.ppo; the formulas are TRL's: launcher.training.ppo_loss)."""

    reward_model: Optional[str] = None
    """RUN_DIR of a finished method=rm (or rm_lora) run whose saved model scores prompt + completion (required;
    checked at the dry run). It must share the policy's tokenizer: the text is tokenized once, with the policy's."""
    max_completion_length: int = 16
    """Most tokens generated per completion (tokens); a completion cut here is still scored (truncated)."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (> 0); the loss scores their tokens at it too (logits / temperature, as
    TRL does); the held-out reward is scored greedily."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts: keep the smallest set of tokens whose probability reaches top_p."""
    ppo_epochs: int = 4
    """Optimizer steps on each generation batch (TRL's num_ppo_epochs, LLaMA-Factory's ppo_epochs): the first
    uses the fresh completions, the others reuse them against the sampling policy's log-probs (clipped ratio)."""
    kl_coef: float = 0.05
    """Weight of the per-token KL penalty to the reference in the reward (-kl_coef * (logp - ref_logp); TRL's
    kl_coef). 0: no reference is kept or scored. The reference is a frozen copy (full) or the base with adapters
    off (LoRA). Fixed: LLaMA-Factory's adaptive controller (ppo_target) is not built."""
    cliprange: float = 0.2
    """Clip of the policy ratio: [1 - cliprange, 1 + cliprange]."""
    cliprange_value: float = 0.2
    """Clip of the value prediction around the sampling step's: [old - cliprange_value, old + cliprange_value]
    (reward units)."""
    vf_coef: float = 0.1
    """Weight of the value loss in the loss (TRL's vf_coef)."""
    gamma: float = 1.0
    """Discount per token in GAE."""
    lam: float = 0.95
    """GAE's lambda: 1 gives the Monte Carlo return's advantage, 0 the one-step TD error."""
    whiten_rewards: bool = False
    """Whiten the per-token rewards (not shifting their mean) over the generation batch before GAE
    (LLaMA-Factory's ppo_whiten_rewards, TRL's whiten_rewards). Advantages are always whitened."""
    missing_eos_penalty: Optional[float] = None
    """Subtracted from the score of a completion cut at max_completion_length without an end token (TRL's
    missing_eos_penalty); None: none."""
    eval_prompts: int = 32
    """Held-out prompts answered greedily before and after training (and every train.eval_every steps) and
    scored by the reward model (eval/reward; eval/exact_match where the rows have answers); 0: off."""

@dataclass
class KtoConfig:
    beta: float = 0.1
    """Strength of the pull towards the reference (LLaMA-Factory's pref_beta, TRL's beta)."""
    desirable_weight: float = 1.0
    """Weight of the desirable (kto_tag true) rows' losses (LLaMA-Factory's kto_chosen_weight); with unbalanced
    data keep desirable_weight * n_desirable / (undesirable_weight * n_undesirable) in [1, 4/3] (the KTO paper)."""
    undesirable_weight: float = 1.0
    """Weight of the undesirable (kto_tag false) rows' losses (LLaMA-Factory's kto_rejected_weight)."""
    probe_rows: int = 8
    """Training rows whose rewards/KL are logged before and after training (0: off); never more than the run
    trains on. Each costs forwards before and after (the dry run counts them)."""


@dataclass
class FreezeConfig:
    """Freeze tuning (method.finetuning=freeze), LLaMA-Factory's freeze_* options: only some decoder layers (and
    named modules) train; the saved model is a full HF model."""

    trainable_layers: int = 2
    """N > 0: the last N decoder layers train; N < 0: the first |N| (LLaMA-Factory's freeze_trainable_layers)."""
    trainable_modules: Any = "all"
    """all, or a list of module names inside those layers (mlp, self_attn, ...): freeze_trainable_modules."""
    extra_modules: list = field(default_factory=list)
    """Modules outside the decoder layers that also train (embed_tokens, norm, lm_head): freeze_extra_modules."""
    llama_pro: bool = False
    """LLaMA-Pro (LLaMA-Factory's use_llama_pro): trainable_layers N picks the N blocks block expansion inserted (every
    num_layers/N-th layer: stride-1, 2*stride-1, ... with stride num_layers/N) instead of the last N; num_layers must
    divide by N."""


@dataclass
class TokenLossConfig:
    """The SFT token loss (method.token_loss): plain cross-entropy or a reweighted variant
    (launcher.training.token_losses has the papers' formulas); LLaMA-Factory's use_dft_loss, use_asft_loss,
    use_eaft_loss."""

    name: str = "ce"
    """ce (cross-entropy), dft (each token's loss x its probability, detached), eaft (x (top-20 entropy / 3)^alpha,
    detached), asft (dft + asft_alpha x KL(reference || policy) per token, against the frozen starting model)."""
    asft_alpha: float = 0.1
    """ASFT: weight of the per-token KL to the reference (LLaMA-Factory's asft_alpha)."""
    eaft_alpha: float = 1.0
    """EAFT: power of the entropy weight (LLaMA-Factory's eaft_alpha); 0 gives plain cross-entropy."""


@dataclass
class LlamaProConfig:
    """LLaMA-Pro block expansion (Wu et al. 2024): copies of decoder layers inserted with their output projections
    (o_proj, down_proj) zeroed, so the expanded model computes what the original did; with method=llama_pro only
    the new blocks train."""

    expand: int = 0
    """New blocks to insert when the model is built, one after every num_layers/expand-th layer (must divide the
    layer count); 0: no expansion (a model LLaMA-Factory's scripts/llama_pro.py already expanded is trained with
    method.freeze.llama_pro=true alone). The saved model has num_layers + expand layers."""


@dataclass
class OftConfig:
    """OFT (peft's OFTConfig; LLaMA-Factory's finetuning_type: oft): each adapted weight is multiplied by a learned
    block-diagonal orthogonal matrix (Cayley parametrized), which keeps the angles between neurons."""

    block_size: int = 32
    """Rows of each orthogonal block (LLaMA-Factory's oft_block_size); must divide every adapted layer's input
    size. Set it or r, not both (peft: r = in_features / block_size)."""
    r: int = 0
    """Number of orthogonal blocks (oft_rank); 0: derived from block_size."""
    target_modules: Any = "all-linear"
    """all-linear, or a list of module names (q_proj, v_proj, ...): LLaMA-Factory's oft_target."""
    module_dropout: float = 0.0
    """Probability of dropping a whole block's rotation in training (multiplicative dropout), in [0, 1)."""
    modules_to_save: Optional[list] = None
    """Modules trained in full and saved with the adapter (LLaMA-Factory's additional_target); None: adapters only."""


@dataclass
class GaloreConfig:
    """GaLore (Zhao et al. 2024, galore-torch): the gradients of the targeted matrices are projected onto rank
    ``rank`` subspaces (refreshed by an SVD every ``update_interval`` steps), where the optimizer keeps its state:
    optimizer memory of those matrices shrinks by about min(m, n) / rank. With method.optimizer=galore_adamw,
    galore_adamw_8bit or galore_adafactor; LLaMA-Factory's galore_* keys."""

    target: Any = "all"
    """all (every linear layer but the LM head), or a list of module names (q_proj, v_proj, ...): the 2-D weights of the
    linear modules whose name contains one of them are projected; the rest train with the plain optimizer."""
    rank: int = 16
    """Rank of the projected gradient (and of the optimizer state of the projected matrices)."""
    update_interval: int = 200
    """Optimizer steps between two refreshes of a matrix's projection (an SVD of its gradient)."""
    scale: float = 2.0
    """Multiplier of the projected-back update (GaLore's alpha; LLaMA-Factory's default 2)."""
    proj_type: str = "std"
    """std (project the smaller side), reverse_std, right, left, full."""
    layerwise: bool = False
    """One optimizer per parameter, stepped in the backward pass as soon as its gradient is ready, so gradients are
    never all held at once (LLaMA-Factory's galore_layerwise). One process, train.grad_accum=1, no gradient clipping
    (the logged grad_norm is 0), not with model.dtype=float16."""


@dataclass
class ApolloConfig:
    """APOLLO (Zhu et al. 2025, apollo-torch): AdamW's update scaled channel- (or tensor-) wise by factors estimated
    in a rank ``rank`` random (or SVD) projection of the gradient, for SGD-like optimizer memory. With
    method.optimizer=apollo_adamw; LLaMA-Factory's apollo_* keys."""

    target: Any = "all"
    """all (every linear layer but the LM head), or a list of module names; as method.galore.target."""
    rank: int = 16
    """Rank of the auxiliary projection (1 with scale_type=tensor is APOLLO-Mini)."""
    update_interval: int = 200
    """Optimizer steps between two refreshes of the projection."""
    scale: float = 32.0
    """Multiplier of the scaled update (the update is multiplied by sqrt(scale))."""
    proj: str = "random"
    """random (Gaussian projection from a per-matrix seed) or svd."""
    proj_type: str = "std"
    """std, right, left: which side of the matrix is projected."""
    scale_type: str = "channel"
    """channel (one factor per row or column) or tensor (one per matrix)."""
    scale_front: bool = False
    """Apply sqrt(scale) before the norm-growth limiter instead of after."""
    layerwise: bool = False
    """One optimizer per parameter, stepped in the backward pass (as method.galore.layerwise; LLaMA-Factory's
    apollo_layerwise)."""


@dataclass
class BadamConfig:
    """BAdam (Luo et al. 2024, the badam package), layer mode: block coordinate descent, one decoder layer (block)
    trains at a time under AdamW, switching every ``switch_interval`` steps; the optimizer state is that of one
    block. With method.optimizer=badam; LLaMA-Factory's badam_* keys (badam_mode: layer)."""

    start_block: Optional[int] = None
    """The block (decoder layer index) trained first; None: the first of switch_mode's order."""
    switch_mode: str = "ascending"
    """ascending, descending, random (a random order per pass over the blocks), fixed (start_block only)."""
    switch_interval: int = 50
    """Optimizer steps before the next block trains."""


@dataclass
class MethodConfig:
    name: str = "sft_full"
    """sft_full, lora, dpo, kto, rm, pretrain: which recipe trains (``METHODS``)."""
    finetuning: str = "full"
    """full, lora or freeze; each method allows the kinds ``METHODS`` lists."""
    lr: float = 1e-3
    """Peak learning rate, reached after warmup; the schedule (train.lr_scheduler) decays it to train.min_lr_ratio x lr.
    LoRA+ trains the B matrices at lora.plus_lr_ratio x this."""
    weight_decay: float = 0.0
    """AdamW's decoupled weight decay on matrices; biases and norm weights (1-D tensors) are never decayed."""
    optimizer: str = "adamw"
    """adamw, sgd (momentum 0.9), adafactor (transformers', fixed lr), adamw_8bit or paged_adamw_8bit
    (bitsandbytes, CUDA only), galore_adamw, galore_adamw_8bit (CUDA), galore_adafactor (method.galore),
    apollo_adamw (method.apollo), badam (method.badam), adam_mini (one second moment per head or neuron), muon
    (torch's Muon for the 2-D hidden matrices, AdamW for embeddings, LM head and 1-D tensors): launcher.engines.optim.
    Each comes from the library its authors maintain; the dry run refuses one that cannot run with the parallelism."""
    pure_bf16: bool = False
    """Weights and optimizer state in bfloat16 with no fp32 master copy (LLaMA-Factory's pure_bf16): about half the
    memory of mixed precision for weights, gradients and optimizer state; small updates can be lost to bf16's 8-bit
    mantissa. Computes in bf16 on a CPU too. parallelism=ddp only."""
    adam_beta1: float = 0.9
    """AdamW's decay rate of the gradient's running mean."""
    adam_beta2: float = 0.999
    """AdamW's decay rate of the squared gradient's running mean."""
    adam_eps: float = 1e-8
    """AdamW's epsilon, added to the denominator for stability."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """Adapters, with method.finetuning=lora."""
    dpo: DpoConfig = field(default_factory=DpoConfig)
    """The preference loss, for method.name=dpo."""
    kto: KtoConfig = field(default_factory=KtoConfig)
    """The KTO loss, for method.name=kto."""
    rm: RmConfig = field(default_factory=RmConfig)
    """The reward model's probe, for method.name=rm."""
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    """Rollouts, rewards and the clipped loss, for method.name=grpo."""
    ppo: PpoConfig = field(default_factory=PpoConfig)
    """Rollouts, the reward model, the value head and the clipped losses, for method.name=ppo."""
    freeze: FreezeConfig = field(default_factory=FreezeConfig)
    """Which layers train, with method.finetuning=freeze."""
    token_loss: TokenLossConfig = field(default_factory=TokenLossConfig)
    """SFT's per-token loss (cross-entropy, DFT, EAFT, ASFT); methods sft_full, lora, freeze, oft, llama_pro."""
    llama_pro: LlamaProConfig = field(default_factory=LlamaProConfig)
    """LLaMA-Pro's block expansion at build time (method=llama_pro)."""
    oft: OftConfig = field(default_factory=OftConfig)
    """Orthogonal adapters, with method.finetuning=oft."""
    galore: GaloreConfig = field(default_factory=GaloreConfig)
    """GaLore's projection, with method.optimizer=galore_*."""
    apollo: ApolloConfig = field(default_factory=ApolloConfig)
    """APOLLO's projection, with method.optimizer=apollo_adamw."""
    badam: BadamConfig = field(default_factory=BadamConfig)
    """BAdam's block schedule, with method.optimizer=badam."""


@dataclass
class TrainConfig:
    seed: int = 42
    """Seeds the random init (model and adapters), the data mix and held-out split, and each epoch's shuffle."""
    max_steps: int = -1
    """Optimizer steps; -1: derive from epochs."""
    epochs: float = 3.0
    """Passes over the training mix when max_steps is -1; may be fractional."""
    micro_batch_size: int = 16
    """Rows per forward/backward on each rank; with cutoff_len it sets activation memory. An optimizer step sees
    micro_batch_size x grad_accum x world size rows."""
    grad_accum: Optional[int] = 1
    """Micro-batches per optimizer step; None: derived from global_batch_size (set it to null to give only that)."""
    global_batch_size: Optional[int] = None
    """micro_batch_size x grad_accum x world size; must divide exactly."""
    lr_scheduler: str = "cosine"
    """cosine, linear, constant."""
    warmup_steps: int = 0
    """Optimizer steps of linear warmup from 0 to method.lr; when > 0 it wins over warmup_ratio."""
    warmup_ratio: float = 0.03
    """Warmup as a fraction of all optimizer steps (rounded up), used when warmup_steps is 0."""
    min_lr_ratio: float = 0.0
    """Where the cosine or linear decay ends, as a fraction of method.lr (0: decays to 0)."""
    max_grad_norm: float = 1.0
    """Clip the gradients' global L2 norm to this before each optimizer step; 0: no clipping."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less activation memory for about a third more compute per step."""
    gradient_checkpointing_kwargs: dict = field(default_factory=dict)
    """Options of torch.utils.checkpoint for gradient_checkpointing (transformers' gradient_checkpointing_kwargs):
    use_reentrant (false unless given; LLaMA-Factory's use_reentrant_gc), preserve_rng_state, determinism_check."""
    log_every: int = 10
    """A train record (loss, lr, grad norm, tokens/s) in metrics.jsonl every this many optimizer steps, and at the last
    one."""
    eval_every: int = 250
    """Held-out evaluation every this many optimizer steps; 0: only at the end (when there is eval data)."""
    save_every: int = 0
    """0: save only the final model."""
    save_every_minutes: Optional[float] = None
    """A checkpoint when this many minutes passed since the last one (rank 0's clock, agreed by all ranks at a
    step boundary), beside save_every. None: 30 on SLURM (cluster.kind=slurm), where a job can be preempted or
    requeued at any time, 0 (off) elsewhere."""
    save_model: bool = True
    """Write the final model (benchmarks turn it off)."""
    keep_checkpoints: int = 2
    """Step checkpoints kept in RUN_DIR/checkpoints; older ones are deleted once a newer one is complete."""
    eval_max_batches: int = 0
    """0: the whole eval set."""
    exact_match_samples: int = 0
    """Held-out prompts answered greedily before and after training, scored by exact match (0: off)."""
    max_new_tokens: int = 32
    """Longest greedy answer for the exact-match check (exact_match_samples)."""
    loss_chunk_size: int = 256
    """Positions per chunk of the LM head + cross-entropy; logits are never materialized for all positions."""
    stall_timeout_s: Optional[float] = None
    """Hang watchdog (launcher/training/watchdog.py): seconds a rank may go without progress before the run is taken
    for hung: every rank's stack is dumped to RUN_DIR/logs/stall-<time>/, the stalled rank(s) and phase are logged,
    and the ranks exit so that torchrun (cluster.max_restarts) or SLURM restarts them from the last checkpoint.
    Covers the training loop's phases: a step, a collective, an evaluation, a checkpoint, the final save (start-up:
    startup_stall_timeout_s). None: 30 min for a step or a collective, an hour for an evaluation, a checkpoint or
    the final save; a number: that for each of them; 0: the watchdog is off."""
    startup_stall_timeout_s: Optional[float] = None
    """The hang watchdog's bound for start-up phases (joining the process group, loading the model, building the
    engine and resuming): a large model loads for minutes, so these have their own. None: 15 min for the process
    group, 30 min for the model and engine; a number: that for each; 0: start-up is not timed. Tokenizing the
    data is never timed (it takes as long as it takes, with progress in the log)."""


DEFAULT_SLURM_SAVE_MINUTES = 30.0


def save_every_minutes(cfg: "Config") -> float:
    """train.save_every_minutes resolved: None -> 30 on SLURM, 0 (off) elsewhere."""
    if cfg.train.save_every_minutes is not None:
        return float(cfg.train.save_every_minutes)
    return DEFAULT_SLURM_SAVE_MINUTES if cfg.cluster.kind == "slurm" else 0.0


PARALLELISMS: dict[str, tuple[str, int, bool]] = {name: (row.strategy, row.zero_stage, row.offload)
                                                  for name, row in PRESETS.items()}
"""parallelism.name -> (strategy, zero_stage, offload): the name and the three keys must agree."""


@dataclass
class ParallelismConfig:
    name: str = "ddp"
    """ddp, zero2, zero3, zero3_offload, fsdp, fsdp_offload; must agree with the three keys below."""
    strategy: str = "ddp"
    """ddp, deepspeed, fsdp."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage (1, 2, 3); 0 for ddp and fsdp."""
    offload: bool = False
    """CPU offload: ZeRO-3 parameters + optimizer state (zero3_offload), or FSDP2 CPUOffloadPolicy (fsdp_offload)."""
    backend: str = "auto"
    """auto (nccl on GPU, gloo on CPU), nccl, gloo."""
    deepspeed: dict = field(default_factory=dict)
    """Extra DeepSpeed config merged over the generated one (launcher/engines/deepspeed.py)."""
    sequence_parallel: int = 1
    """Ranks that share each (packed) row, DeepSpeed-Ulysses style (launcher/engines/sequence_parallel.py): the row's
    tokens are split over them and each attention layer trades heads for sequence with an all-to-all, so activation
    memory per rank falls about N-fold. Groups are consecutive ranks inside the data-parallel world (ddp, zero2/3,
    fsdp still shard over every rank): it must divide the world size (nodes x nproc_per_node) and the model's
    attention and key/value heads. SFT, LoRA and pretraining only. 1: off."""


@dataclass
class ClusterConfig:
    name: str = "local"
    """The preset chosen (conf/cluster/<name>.yaml), kept in the resolved config for the record."""
    kind: str = "local"
    """local (torchrun on this host) or slurm (submitit)."""
    nodes: int = 1
    """Machines; on SLURM one task per node, each running torchrun with nproc_per_node ranks."""
    nproc_per_node: int = 1
    """Processes per node: GPUs, or CPU processes on gloo."""
    gpus_per_node: int = 0
    """GPUs requested per node (sbatch --gpus-per-node); 0: a CPU job."""
    cpus_per_task: Optional[int] = None
    """CPUs per node's task (sbatch --cpus-per-task), shared by its ranks and the data workers; None: the partition's
    default."""
    mem_gb: Optional[float] = None
    """Memory per node in GB (sbatch --mem); None: the partition's default."""
    partition: Optional[str] = None
    """SLURM partition (sbatch --partition); None: the cluster's default."""
    account: Optional[str] = None
    """SLURM account charged (sbatch --account); None: your default account."""
    qos: Optional[str] = None
    """SLURM quality of service (sbatch --qos); None: the default."""
    time_min: int = 60
    """Time limit in minutes (sbatch --time); the stop signal comes signal_delay_s before it."""
    constraint: Optional[str] = None
    """Node features required (sbatch --constraint, e.g. a100); None: any node."""
    exclusive: bool = False
    """Whole nodes, shared with no other job (sbatch --exclusive)."""
    gpu_memory_gb: Optional[float] = None
    """Memory of one GPU, for the preflight's fit check (80 for A100-80G/H100)."""
    signal_delay_s: int = 120
    """Seconds before the time limit that SLURM sends the stop signal (USR2): every rank checkpoints at a step boundary
    and the job requeues. Must be shorter than the time limit."""
    max_requeues: int = 3
    """How many times a run requeues itself after a stop signal (time limit or preemption) before it gives up."""
    max_restarts: int = 2
    """torchrun --max-restarts: how many times a node restarts its ranks after one fails, within one job."""
    preprocess: str = "rank"
    """Where the data is tokenized on SLURM. rank: in the training job (one rank builds the cache, every other rank
    of every node waits on its lock, without a collective or a timeout). job: first in a CPU job of its own (one
    node, cluster.cpus_per_task, no GPUs: ``launcher data build``), and the training job starts after it
    (``--dependency=afterok``), so GPUs never wait on tokenization. Same cache key either way."""
    rendezvous_timeout_s: int = 300
    """Seconds a non-head node waits for the head node's rendezvous port to answer before the job fails with a
    message naming the address, port and network interface (launcher/slurm/rendezvous.py); the head's torchrun
    starts within seconds, so this bounds start-up hangs (a firewall, a wrong interface or head address)."""
    array_parallelism: int = 16
    """A sweep is one job array: at most this many of its points run at once (sbatch --array=...%N)."""
    sbatch_extra: dict = field(default_factory=dict)
    """More #SBATCH options, {option: value}; options the launcher sets from the keys above are refused."""
    setup: list = field(default_factory=list)
    """Shell lines run before the job (module load, environment activation)."""
    env: dict = field(default_factory=dict)
    """Environment variables for the job (NCCL_*, ...). Secrets are passed through, never written here."""
    nccl_socket_ifname: Optional[str] = None
    """Network interface(s) NCCL bootstraps and talks over (NCCL_SOCKET_IFNAME: ``ib0``, ``eth0``, ``^lo,docker``);
    None: NCCL picks. A wrong pick (a docker bridge, a management NIC) hangs multi-node init."""
    nccl_ib_hca: Optional[str] = None
    """InfiniBand adapters NCCL may use (NCCL_IB_HCA: ``mlx5_0,mlx5_1`` or ``=mlx5_0:1``); None: all."""
    container_image: Optional[str] = None
    """SLURM with pyxis/enroot: run each node's task in this image (``srun --container-image=...``: an enroot
    URI ``nvcr.io#nvidia/pytorch:25.01-py3`` or a ``.sqsh`` file). The image needs this launcher's dependencies.
    None: no container."""
    container_mounts: list = field(default_factory=list)
    """With container_image: ``SRC[:DST[:FLAGS]]`` mounts (``--container-mounts``) for data, models and caches;
    the run dir is always mounted at its own path."""
    container_prefix: Optional[str] = None
    """SLURM without pyxis: a command put before torchrun on each node (``apptainer exec --nv image.sif``,
    ``singularity exec --nv -B /data image.sif``); bind the run dir and data yourself. The image's torch must be
    >= 2.9 (torchrun --signals-to-handle). None: torchrun runs on the host."""
    container_python: str = "python"
    """The Python inside the container (with container_image or container_prefix): it runs the node task and
    torchrun, as the submitting Python's path rarely exists in the image."""


LOGGER_BACKENDS = ("wandb", "tensorboard", "mlflow")


@dataclass
class LoggerConfig:
    name: str = "none"
    """The preset chosen (logger=none|wandb|tensorboard|mlflow); it is the one backend when ``backends`` is empty."""
    backends: list = field(default_factory=list)
    """Several at once: logger.backends=[wandb,tensorboard,mlflow]. Empty: just ``name`` (none: metrics.jsonl only)."""
    project: str = "launcher"
    """W&B project, MLflow experiment name."""
    entity: Optional[str] = None
    """W&B entity (team or user)."""
    group: Optional[str] = None
    """W&B group, MLflow tag ``group``, TensorBoard text ``group``; a sweep sets it to the sweep's name."""
    tags: list = field(default_factory=list)
    """W&B tags, MLflow tags (tag.<name>) and a TensorBoard text entry."""
    mode: str = "auto"
    """W&B: auto (online with credentials, offline without), online, offline, disabled."""
    tracking_uri: Optional[str] = None
    """MLflow tracking URI; default a local file store, RUN_DIR/mlruns."""
    tensorboard_dir: Optional[str] = None
    """TensorBoard log dir; default RUN_DIR/tensorboard."""


def logger_backends(logger: LoggerConfig) -> list:
    """The backends metrics go to besides metrics.jsonl."""
    if logger.backends:
        return list(logger.backends)
    return [] if logger.name == "none" else [logger.name]


@dataclass
class RunConfig:
    name: Optional[str] = None
    """Run name; default ``<model>-<method>-<data>``."""
    output_root: str = "outputs"
    """Where run dirs are made: OUTPUT_ROOT/<run name>/<date>/<time> (relative to the current directory)."""
    dir: Optional[str] = None
    """Set by the launcher: the run dir."""
    resume: str = "auto"
    """auto (latest complete checkpoint of this run dir), never, or a checkpoint path."""
    link_model_to: Optional[str] = None
    """After training, the final model's files are linked (relative symlinks) into this folder, replacing the
    links an earlier run left there and never touching other files: where LLaMA-Factory's follow-up YAMLs look
    for a model (``adapter_name_or_path: <output_dir>``). ``--from-llamafactory`` sets it to the file's
    ``output_dir``."""


@dataclass
class GenerationConfig:
    """Which engine generates the online-RL rollouts (method=grpo, ppo): transformers in the training process, or
    vLLM in a venv of its own (launcher.inference.vllm_engine)."""

    engine: str = "transformers"
    """transformers: the policy itself with a KV cache (launcher.inference.rollout); vllm: vLLM's CPU/GPU build run
    as a subprocess (``make vllm-env`` makes its venv; the dry run refuses vllm without it), given the policy's
    weights (LoRA merged in) again after every optimizer update. Greedy completions are the same on both; sampled
    ones are drawn by each engine's own generator. vllm needs parallelism without parameter sharding (ddp,
    zero2)."""
    vllm_python: Optional[str] = None
    """The vLLM venv's python; None: $LAUNCHER_VLLM_PYTHON, else the repo's .venv-vllm/bin/python."""
    vllm_kv_cache_gib: float = 1.0
    """Memory vLLM reserves for its KV cache per rank (GiB, whole numbers on CPU: VLLM_CPU_KVCACHE_SPACE), beside
    the policy's own memory; it bounds how many rollout tokens vLLM keeps in flight, not the result."""


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    """What is trained (conf/model/)."""
    data: DataConfig = field(default_factory=DataConfig)
    """What it is trained on (conf/data/)."""
    method: MethodConfig = field(default_factory=MethodConfig)
    """How: the recipe, what trains and the optimizer (conf/method/)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """The loop: steps, batch, schedule, evaluation and checkpoint cadence."""
    parallelism: ParallelismConfig = field(default_factory=ParallelismConfig)
    """How the model is spread over ranks (conf/parallelism/)."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    """Where it runs: this host or SLURM (conf/cluster/)."""
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    """Where metrics go besides metrics.jsonl (conf/logger/)."""
    run: RunConfig = field(default_factory=RunConfig)
    """The run's name, run dir and resume."""
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    """The rollout engine of online RL (generation.engine=transformers|vllm)."""


# ---------------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it converted (int -> float is allowed)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"{key}: must not be null")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            return list(value)
    elif tp is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _build(cls: type, data: dict, prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for raw_key, value in data.items():
        key = f"{prefix}.{raw_key}" if prefix else str(raw_key)
        if raw_key not in names:
            known = ", ".join(sorted(names))
            raise ConfigError(f"unknown config key '{key}' (known keys here: {known})")
        kwargs[raw_key] = _convert(value, hints[raw_key], key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def parse_config(data: dict, check: bool = True) -> Config:
    """Plain dict (resolved) -> validated Config. Raises ConfigError naming the key.

    check=False: types only; the caller runs ``validation_problems`` itself (the preflight, which lists every
    problem of a run at once)."""
    cfg = _build(Config, data, "")
    cfg.data.datasets = [_dataset_entry(d, f"data.datasets[{i}]") for i, d in enumerate(cfg.data.datasets)]
    cfg.data.eval_datasets = [
        _dataset_entry(d, f"data.eval_datasets[{i}]") for i, d in enumerate(cfg.data.eval_datasets)
    ]
    if check:
        validate(cfg)
    return cfg


def _dataset_entry(value: Any, key: str) -> DatasetEntry:
    if isinstance(value, DatasetEntry):
        return value
    if isinstance(value, str):
        return DatasetEntry(name=value)
    if isinstance(value, dict):
        return _build(DatasetEntry, value, key)
    raise ConfigError(f"{key}: expected a dataset name or {{name, max_samples, weight}}, got {value!r}")


def _choice(value: str, allowed: tuple, key: str) -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: '{value}' is not one of {', '.join(allowed)}")


TEXT_TEMPLATES = ("chatml", "qwen", "qwen3_nothink", "llama3", "mistral", "plain")
"""The named text templates (launcher.data.templates renders them): the ones ``launcher serve --template`` can
force."""
NAMED_TEMPLATES = (*TEXT_TEMPLATES, "qwen2_vl", "qwen3_vl", "qwen3_vl_nothink", "qwen2_audio", "qwen2_omni")
"""Every ``data.template`` name but ``auto``."""


GENERATION_METHODS = ("grpo", "ppo")
"""Methods whose rollouts generation.engine chooses the engine of."""


def validate_generation(cfg: Config) -> None:
    g = cfg.generation
    _choice(g.engine, ("transformers", "vllm"), "generation.engine")
    if g.engine == "vllm" and cfg.method.name not in GENERATION_METHODS:
        raise ConfigError(f"generation.engine: method={cfg.method.name} generates no rollouts; vllm is for"
                          f" {', '.join(GENERATION_METHODS)} (launcher serve --engine vllm serves a model)")
    if g.engine == "vllm" and shards_parameters(cfg.parallelism):
        raise ConfigError(f"generation.engine: vllm is given the policy's whole weights, not gathered from shards"
                          f" under parallelism={cfg.parallelism.name} yet; use parallelism=ddp (or zero2), or"
                          " generation.engine=transformers")


ADAPTER_KINDS = ("lora", "oft")
"""method.finetuning kinds that train a peft adapter on a frozen base (saved as the adapter alone)."""


METHODS: dict[str, tuple[str, tuple[str, ...]]] = {
    "sft_full": ("recipes.sft", ("full", "freeze")),
    "lora": ("recipes.sft", ("lora",)),
    "oft": ("recipes.sft", ("oft",)),
    "llama_pro": ("recipes.sft", ("freeze",)),
    "dpo": ("recipes.dpo", ("full", "lora")),
    "kto": ("recipes.kto", ("full", "lora")),
    "rm": ("recipes.rm", ("full", "lora", "freeze")),
    "grpo": ("recipes.grpo", ("full", "lora")),
    "ppo": ("recipes.ppo", ("full", "lora")),
    "pretrain": ("recipes.pretrain", ("full", "lora", "freeze")),
}
"""method.name -> (the recipe module every rank runs, the method.finetuning kinds it allows)."""


def recipe_module(cfg: Config) -> str:
    """The module the ranks run (``python -m MODULE --run-dir RUN_DIR``): the launcher names recipes, never imports."""
    return METHODS[cfg.method.name][0]


def validation_problems(cfg: Config) -> list[str]:
    """Every string with a control character (launcher.config.text_values), every value out of range
    (launcher.config.ranges), or else the first impossible combination."""
    from launcher.config.ranges import range_problems
    from launcher.config.text_values import text_problems

    problems = text_problems(cfg) + range_problems(cfg)
    if problems:  # the combination checks below assume values in range
        return problems
    try:
        check_combinations(cfg)
    except ConfigError as exc:
        return [str(exc)]
    return []


def validate(cfg: Config) -> None:
    """Raise one ConfigError naming every problem that ``validation_problems`` finds."""
    problems = validation_problems(cfg)
    if len(problems) == 1:
        raise ConfigError(problems[0])
    if problems:
        raise ConfigError(f"{len(problems)} problems in the config:\n" + "\n".join(f"  - {p}" for p in problems))


def check_combinations(cfg: Config) -> None:
    """Reject impossible choices and combinations, naming the key and what to change."""
    m, t, d, p, c = cfg.method, cfg.train, cfg.data, cfg.parallelism, cfg.cluster
    _choice(m.name, tuple(METHODS), "method.name")
    _choice(m.finetuning, ("full", "lora", "freeze", "oft"), "method.finetuning")
    allowed = METHODS[m.name][1]
    if m.finetuning not in allowed:
        hint = "; use method=lora" if m.name == "sft_full" else ""
        raise ConfigError(f"method.finetuning: method={m.name} needs method.finetuning={'|'.join(allowed)}{hint}")
    _choice(m.optimizer, OPTIMIZERS, "method.optimizer")
    optimizer_problem = optimizer_combination_problem(cfg)
    if optimizer_problem:
        raise ConfigError(optimizer_problem)
    _choice(m.dpo.loss_type, ("sigmoid", "ipo", "hinge", "simpo", "orpo"), "method.dpo.loss_type")
    if m.name == "dpo":
        validate_dpo(m.dpo)
    if m.name == "rm":
        if m.lora.quantize is not None:
            raise ConfigError("method.lora.quantize: a quantized (QLoRA) base is not built as a reward model here;"
                              " use method=rm_lora with method.lora.quantize=null")
    if m.name == "grpo":
        validate_grpo(m.grpo, d)
    if m.name == "ppo" and d.packing:
        raise ConfigError("data.packing: method=ppo trains on its own completions, one per row; set"
                          " data.packing=false")
    validate_generation(cfg)
    if m.name == "pretrain" and not d.packing:
        raise ConfigError("data.packing: method=pretrain packs documents (each ends with the end-of-text token and"
                          " attends only to itself); set data.packing=true (data=c4_demo and data=wiki_demo do)")
    if not (m.lora.init in ("default", "gaussian", "pissa", "olora") or re.fullmatch(r"pissa_niter_[1-9]\d*", m.lora.init)):
        raise ConfigError(f"method.lora.init: '{m.lora.init}' is not one of default, gaussian, pissa, pissa_niter_N"
                          " (N >= 1: fast SVD), olora")
    if lora_init_converted(m.lora) and shards_parameters(p):
        raise ConfigError(f"method.lora.init: {m.lora.init} is converted to a plain LoRA adapter when saved, which is"
                          f" not done under parallelism={p.name} yet; use parallelism=ddp (or zero2), or"
                          " method.lora.init=default")
    if m.lora.quantize is not None:
        _choice(m.lora.quantize, ("4bit", "8bit"), "method.lora.quantize")
        if m.finetuning != "lora":
            raise ConfigError(f"method.lora.quantize: QLoRA quantizes the frozen base under LoRA adapters; it needs"
                              f" method.finetuning=lora (method=lora, dpo_lora, kto_lora), got {m.finetuning}")
        if cfg.model.name_or_path is None:
            raise ConfigError("method.lora.quantize: QLoRA quantizes a pretrained model's weights; set model=hf"
                              " model.name_or_path=... (a random-init model has nothing worth quantizing)")
        if shards_parameters(p):
            raise ConfigError(f"method.lora.quantize: a quantized base is not sharded by parallelism={p.name} here;"
                              " use parallelism=ddp (each GPU holds the whole 4-bit base)")
        if lora_init_converted(m.lora):
            raise ConfigError(f"method.lora.init: {m.lora.init} decomposes full-precision weights; with"
                              " method.lora.quantize use method.lora.init=default")
    if m.lora.plus_lr_ratio is not None and m.finetuning != "lora":
        raise ConfigError(f"method.lora.plus_lr_ratio: LoRA+ needs method.finetuning=lora (method=lora), got"
                          f" finetuning={m.finetuning}; leave it unset (null) otherwise")
    if m.finetuning == "freeze":
        if m.freeze.trainable_layers == 0:
            raise ConfigError("method.freeze.trainable_layers: must not be 0 (N > 0: the last N layers train,"
                              " N < 0: the first |N|)")
        if not (m.freeze.trainable_modules == "all" or isinstance(m.freeze.trainable_modules, list)):
            raise ConfigError("method.freeze.trainable_modules: use all or a list of module names (mlp, self_attn)")
    check_method_variants(cfg)
    check_sequence_parallel(cfg)
    if not (m.lora.target_modules == "all-linear" or isinstance(m.lora.target_modules, list)):
        raise ConfigError("method.lora.target_modules: use all-linear or a list of module names")
    _choice(t.lr_scheduler, ("cosine", "linear", "constant"), "train.lr_scheduler")
    if t.max_steps == 0:
        raise ConfigError("train.max_steps: must be > 0, or -1 to train for train.epochs, got 0")
    if t.max_steps == -1 and t.epochs <= 0:
        raise ConfigError("train.epochs: must be > 0 when train.max_steps is -1")
    if not d.datasets:
        raise ConfigError("data.datasets: name at least one dataset (e.g. data.datasets=[alpaca_en_demo])")
    _choice(d.mix_strategy, ("concat", "interleave"), "data.mix_strategy")
    if d.template is not None:
        _choice(d.template, ("auto", *NAMED_TEMPLATES), "data.template")
    _choice(cfg.model.dtype, ("auto", "float32", "bfloat16", "float16"), "model.dtype")
    _choice(
        cfg.model.attn_implementation,
        ("auto", "sdpa", "eager", "flash_attention_2"),
        "model.attn_implementation",
    )
    _choice(p.strategy, STRATEGIES, "parallelism.strategy")
    _choice(p.backend, ("auto", "nccl", "gloo"), "parallelism.backend")
    if p.strategy == "deepspeed" and p.zero_stage not in (1, 2, 3):
        raise ConfigError("parallelism.zero_stage: DeepSpeed needs zero_stage 1, 2 or 3")
    if p.offload and p.strategy == "ddp":
        raise ConfigError("parallelism.offload: CPU offload needs parallelism=zero3_offload or fsdp_offload")
    if p.strategy != "deepspeed" and p.zero_stage != 0:
        raise ConfigError(f"parallelism.zero_stage: {p.zero_stage} applies to DeepSpeed only; with"
                          f" parallelism.strategy={p.strategy} leave it 0 (or use parallelism=zero2/zero3)")
    if p.deepspeed and p.strategy != "deepspeed":
        raise ConfigError("parallelism.deepspeed: extra DeepSpeed settings need parallelism.strategy=deepspeed")
    _check_parallelism_name(p)
    _choice(c.kind, ("local", "slurm"), "cluster.kind")
    _choice(c.preprocess, ("rank", "job"), "cluster.preprocess")
    if c.preprocess == "job" and c.kind != "slurm":
        raise ConfigError("cluster.preprocess=job: a data job is a SLURM job; locally the run tokenizes before its"
                          " first step (or run `launcher data build` with the same overrides first)")
    if c.preprocess == "job" and not cfg.data.use_cache:
        raise ConfigError("cluster.preprocess=job: the data job hands the tokenized data over through the cache;"
                          " drop data.use_cache=false")
    if c.kind == "local" and c.nodes != 1:
        raise ConfigError("cluster.nodes: cluster=local runs on this host only; use cluster=slurm for nodes > 1")
    _choice(cfg.logger.name, ("none",) + LOGGER_BACKENDS, "logger.name")
    for i, backend in enumerate(cfg.logger.backends):
        _choice(backend, LOGGER_BACKENDS, f"logger.backends[{i}]")
    if len(set(cfg.logger.backends)) != len(cfg.logger.backends):
        raise ConfigError(f"logger.backends: {cfg.logger.backends} names a backend twice")
    _choice(cfg.logger.mode, ("auto", "online", "offline", "disabled"), "logger.mode")
    resolve_grad_accum(cfg)


def _check_parallelism_name(p: ParallelismConfig) -> None:
    """parallelism.name labels the run (and sweeps group by it): it must say what strategy/zero_stage/offload do."""
    _choice(p.name, tuple(PARALLELISMS), "parallelism.name")
    actual = (p.strategy, p.zero_stage, p.offload)
    if PARALLELISMS[p.name] == actual:
        return
    matching = [n for n, v in PARALLELISMS.items() if v == actual]
    expected = dict(zip(("strategy", "zero_stage", "offload"), PARALLELISMS[p.name]))
    key = next(k for k, v in zip(("strategy", "zero_stage", "offload"), actual) if expected[k] != v)
    raise ConfigError(
        f"parallelism.{key}: {getattr(p, key)} contradicts parallelism={p.name} ({key}={expected[key]});"
        f" choose the option instead of setting the key: parallelism={matching[0] if matching else p.name}"
    )


GRADIENT_CHECKPOINTING_KWARGS = ("use_reentrant", "preserve_rng_state", "determinism_check", "debug")
SFT_TOKEN_LOSS_METHODS = ("sft_full", "lora", "oft", "llama_pro")


SEQUENCE_PARALLEL_METHODS = ("sft_full", "lora", "oft", "llama_pro", "pretrain")


def check_sequence_parallel(cfg: Config) -> None:
    """parallelism.sequence_parallel: a divisor of the world size, for the causal-LM methods (the model's heads
    are checked by the preflight, which reads the model's config)."""
    n, world, m = cfg.parallelism.sequence_parallel, world_size(cfg), cfg.method
    if n < 1:
        raise ConfigError(f"parallelism.sequence_parallel: {n} must be 1 (off) or more ranks per row")
    if n == 1:
        return
    if world % n:
        raise ConfigError(f"parallelism.sequence_parallel: {n} ranks per row does not divide the world size {world}"
                          f" (cluster.nodes x cluster.nproc_per_node); use a divisor of {world}")
    if m.name not in SEQUENCE_PARALLEL_METHODS:
        raise ConfigError(f"parallelism.sequence_parallel: method={m.name} is not split over sequence ranks here"
                          f" (methods {', '.join(SEQUENCE_PARALLEL_METHODS)}); set parallelism.sequence_parallel=1")
    if m.token_loss.name == "asft":
        raise ConfigError("parallelism.sequence_parallel: the asft token loss runs a reference model on whole rows;"
                          " use method.token_loss.name=ce, dft or eaft, or parallelism.sequence_parallel=1")


def check_method_variants(cfg: Config) -> None:
    """OFT, LLaMA-Pro, the SFT token losses, QLoRA's double quantization and the checkpointing options."""
    m, t, p = cfg.method, cfg.train, cfg.parallelism
    _choice(m.token_loss.name, ("ce", "dft", "eaft", "asft"), "method.token_loss.name")
    if m.token_loss.name != "ce":
        if m.name not in SFT_TOKEN_LOSS_METHODS:
            raise ConfigError(f"method.token_loss.name: {m.token_loss.name} is an SFT loss (methods"
                              f" {', '.join(SFT_TOKEN_LOSS_METHODS)}); method={m.name} has its own loss")
        if m.token_loss.name == "asft" and shards_parameters(p):
            raise ConfigError(f"method.token_loss.name: asft keeps a frozen reference model whole on every rank, which"
                              f" parallelism={p.name} does not shard here; use parallelism=ddp or zero2")
    if m.finetuning == "oft":
        if m.oft.r == 0 and m.oft.block_size <= 0:
            raise ConfigError("method.oft.block_size: give a block size > 0 (32 is LLaMA-Factory's) or method.oft.r")
        if m.oft.r and m.oft.block_size:
            raise ConfigError(f"method.oft: set r ({m.oft.r}) or block_size ({m.oft.block_size}), not both"
                              " (peft derives one from the other); e.g. method.oft.r=0")
        if not (m.oft.target_modules == "all-linear" or isinstance(m.oft.target_modules, list)):
            raise ConfigError("method.oft.target_modules: use all-linear or a list of module names")
        if shards_parameters(p):
            raise ConfigError(f"method.finetuning: oft's orthogonal blocks are built from each weight's full input"
                              f" size, which parallelism={p.name} splits here; use parallelism=ddp or zero2")
    if m.llama_pro.expand and m.name != "llama_pro":
        raise ConfigError(f"method.llama_pro.expand: block expansion trains only the new blocks; use method=llama_pro"
                          f" (got method={m.name}), or set it to 0")
    if m.name == "llama_pro":
        if not m.freeze.llama_pro:
            raise ConfigError("method.freeze.llama_pro: method=llama_pro trains the expanded blocks; set it to true")
    if m.freeze.llama_pro:
        if m.finetuning != "freeze":
            raise ConfigError(f"method.freeze.llama_pro: LLaMA-Pro trains whole expanded blocks (method.finetuning="
                              f"freeze), got finetuning={m.finetuning}")
        if m.freeze.trainable_layers <= 0:
            raise ConfigError("method.freeze.trainable_layers: with llama_pro it counts the expanded blocks, > 0")
        if m.llama_pro.expand and m.freeze.trainable_layers != m.llama_pro.expand:
            raise ConfigError(f"method.freeze.trainable_layers: {m.freeze.trainable_layers} differs from"
                              f" method.llama_pro.expand={m.llama_pro.expand}; the new blocks are the ones that train")
    if not m.lora.double_quantization and m.lora.quantize != "4bit":
        raise ConfigError("method.lora.double_quantization: applies to 4-bit QLoRA only (method.lora.quantize=4bit);"
                          " leave it true otherwise")
    unknown = sorted(set(t.gradient_checkpointing_kwargs) - set(GRADIENT_CHECKPOINTING_KWARGS))
    if unknown:
        raise ConfigError(f"train.gradient_checkpointing_kwargs: {', '.join(map(str, unknown))} is not an option of"
                          f" torch.utils.checkpoint here ({', '.join(GRADIENT_CHECKPOINTING_KWARGS)})")
    if t.gradient_checkpointing_kwargs and not t.gradient_checkpointing:
        raise ConfigError("train.gradient_checkpointing_kwargs: set only with train.gradient_checkpointing=true")


def validate_dpo(d: DpoConfig) -> None:
    """Combinations of DPO settings (their ranges: launcher.config.ranges)."""
    if d.label_smoothing and d.loss_type not in ("sigmoid", "simpo"):
        raise ConfigError(f"method.dpo.label_smoothing: only loss_type sigmoid or simpo use it, not {d.loss_type};"
                          " set it to 0")
    if d.precompute_ref_log_probs and d.loss_type in ("simpo", "orpo"):
        raise ConfigError(f"method.dpo.precompute_ref_log_probs: loss_type={d.loss_type} uses no reference model;"
                          " set it to false")


def validate_grpo(g: GrpoConfig, d: DataConfig) -> None:
    """GRPO's combinations: a group of at least 2, at least one reward, weights that match, known choices."""
    _choice(g.loss_type, ("grpo", "dr_grpo", "dapo", "bnpo"), "method.grpo.loss_type")
    _choice(g.scale_rewards, ("group", "batch", "none"), "method.grpo.scale_rewards")
    _choice(g.reward_errors, ("raise", "zero"), "method.grpo.reward_errors")
    if not g.rewards:
        raise ConfigError("method.grpo.rewards: no reward function; name at least one (exact_match, format, length,"
                          " module:function or rm:RUN_DIR)")
    for k, name in enumerate(g.rewards):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"method.grpo.rewards[{k}]: expected a reward name (exact_match, format, length,"
                              f" module:function or rm:RUN_DIR), got {name!r}")
    if g.reward_weights and len(g.reward_weights) != len(g.rewards):
        raise ConfigError(f"method.grpo.reward_weights: {len(g.reward_weights)} weights for {len(g.rewards)} rewards"
                          f" ({', '.join(map(str, g.rewards))}); give one per reward, or none for 1.0 each")
    if any(isinstance(w, bool) or not isinstance(w, (int, float)) for w in g.reward_weights):
        raise ConfigError(f"method.grpo.reward_weights: expected numbers, got {g.reward_weights!r}")
    if d.packing:
        raise ConfigError("data.packing: method=grpo trains on its own completions, one per row; set"
                          " data.packing=false")


def lora_init_converted(lora: LoraConfig) -> bool:
    """PiSSA and OLoRA change the base weights at init; their saved adapters are converted back to plain LoRA."""
    return lora.init.startswith("pissa") or lora.init == "olora"


def world_size(cfg: Config) -> int:
    return cfg.cluster.nodes * cfg.cluster.nproc_per_node


def resolve_grad_accum(cfg: Config, world: Optional[int] = None) -> int:
    """Micro-batches per optimizer step, from global batch = micro x accum x world (must divide)."""
    t = cfg.train
    # The ranks of a sequence group (parallelism.sequence_parallel) share rows: data-parallel ranks count.
    world = world or world_size(cfg) // max(cfg.parallelism.sequence_parallel, 1)
    per_pass = t.micro_batch_size * world
    if t.global_batch_size is None:
        return t.grad_accum or 1
    if t.global_batch_size % per_pass:
        raise ConfigError(
            f"train.global_batch_size: {t.global_batch_size} is not divisible by micro_batch_size x world size"
            f" = {t.micro_batch_size} x {world} = {per_pass}; pick a multiple of {per_pass}"
        )
    accum = t.global_batch_size // per_pass
    if t.grad_accum is not None and t.grad_accum != accum:
        raise ConfigError(
            f"train.grad_accum: {t.grad_accum} contradicts train.global_batch_size={t.global_batch_size}"
            f" (which gives {accum} with micro_batch_size {t.micro_batch_size} and world size {world});"
            " set only one of them"
        )
    return accum


def config_to_dict(cfg: Config) -> dict:
    return dataclasses.asdict(cfg)


def load_run_config(run_dir: Union[str, Path]) -> Config:
    """What ranks call: the resolved config written by the launcher, no Hydra involved."""
    import yaml

    path = Path(run_dir) / CONFIG_FILE
    with open(path) as fh:
        data = yaml.safe_load(fh)
    return parse_config(data)
