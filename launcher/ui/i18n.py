"""Every label of the UI in English and Chinese, for Gradio's own I18n (the browser's language picks one;
Gradio's settings panel switches it)."""
from __future__ import annotations

from launcher.ui.form import FIELDS, GROUPS

LABELS = {
    "lx_title": ("## launcher: compose, check, submit, watch, compare and chat",
              "## launcher：配置、检查、提交、监控、对比与对话"),
    "lx_tab_compose": ("Compose", "配置"),
    "lx_tab_runs": ("Runs", "运行"),
    "lx_tab_compare": ("Compare", "对比"),
    "lx_tab_chat": ("Chat", "对话"),
    "lx_group_model": ("model", "模型"),
    "lx_group_data": ("data", "数据"),
    "lx_group_method": ("method", "方法"),
    "lx_group_parallelism": ("parallelism", "并行策略"),
    "lx_group_cluster": ("cluster", "集群"),
    "lx_group_logger": ("logger", "日志记录"),
    "lx_group_experiment": ("experiment", "实验预设"),
    "lx_field_method_lr": ("learning rate (method.lr)", "学习率 (method.lr)"),
    "lx_field_train_max_steps": ("max steps (-1: use epochs)", "最大步数（-1：按轮数）"),
    "lx_field_train_epochs": ("epochs", "训练轮数"),
    "lx_field_train_micro_batch_size": ("micro batch size", "单卡批大小"),
    "lx_field_train_global_batch_size": ("global batch size (empty: micro x accum x world)",
                                      "全局批大小（留空：单卡×累积×进程数）"),
    "lx_field_data_cutoff_len": ("cutoff length", "截断长度"),
    "lx_field_data_packing": ("packing", "序列打包"),
    "lx_field_method_lora_r": ("LoRA rank r", "LoRA 秩 r"),
    "lx_field_method_lora_alpha": ("LoRA alpha", "LoRA 缩放系数 alpha"),
    "lx_field_method_dpo_beta": ("DPO beta", "DPO beta 参数"),
    "lx_field_method_dpo_loss_type": ("DPO loss type", "DPO 损失类型"),
    "lx_field_cluster_nodes": ("nodes", "节点数"),
    "lx_field_cluster_nproc_per_node": ("processes per node", "每节点进程数"),
    "lx_field_cluster_gpus_per_node": ("GPUs per node", "每节点 GPU 数"),
    "lx_field_cluster_time_min": ("time limit (minutes)", "时间限制（分钟）"),
    "lx_field_cluster_partition": ("partition", "分区 (partition)"),
    "lx_field_cluster_account": ("account", "账户 (account)"),
    "lx_run_name": ("run name (optional)", "运行名称（可选）"),
    "lx_overrides": ("more overrides (Hydra key=value, space or newline separated)",
                  "其他覆盖项（Hydra key=value，空格或换行分隔）"),
    "lx_sweep": ("sweep grid (a=1,2 b=x,y: one job array)", "超参网格（a=1,2 b=x,y：一个作业数组）"),
    "lx_preview": ("Preview (dry run + preflight)", "预览（试运行 + 预检）"),
    "lx_submit": ("Submit", "提交"),
    "lx_status": ("status", "状态"),
    "lx_data_preview_btn": ("Preview data", "预览数据"),
    "lx_data_n": ("samples", "样本数"),
    "lx_data_preview": ("dataset preview (launcher data preview)", "数据集预览（launcher data preview）"),
    "lx_data_preview_text": ("first samples as the model sees them (trained text highlighted)",
                             "模型看到的前几个样本（高亮为参与训练的文本）"),
    "lx_data_images": ("the samples' images", "样本中的图片"),
    "lx_data_videos": ("the samples' videos (sampled frames)", "样本中的视频（采样帧）"),
    "lx_command": ("equivalent command", "等价命令"),
    "lx_preflight": ("preflight verdict (one problem per line)", "预检结果（每行一个问题）"),
    "lx_plan": ("sbatch script / torchrun command", "sbatch 脚本 / torchrun 命令"),
    "lx_resolved_config": ("resolved config", "解析后的配置"),
    "lx_runs_help": ("Every run and sweep under the output root, read from the run dirs (runs started from the CLI "
                  "too). Click a row to follow it.",
                  "输出目录下的所有运行与超参搜索，直接从运行目录读取（包括命令行提交的运行）。点击一行查看详情。"),
    "lx_refresh": ("Refresh", "刷新"),
    "lx_run": ("run", "运行"),
    "lx_cancel": ("Cancel run", "取消运行"),
    "lx_loss_curve": ("loss (train, eval)", "损失（训练、评估）"),
    "lx_log_file": ("log file", "日志文件"),
    "lx_log_tail": ("log tail", "日志末尾"),
    "lx_compare_runs": ("runs to compare", "对比的运行"),
    "lx_compare_plot": ("loss curves", "损失曲线"),
    "lx_sweep_dir": ("sweep", "超参搜索"),
    "lx_sweep_report": ("sweep report", "超参搜索报告"),
    "lx_sweep_plot": ("sweep plot", "超参搜索图"),
    "lx_chat_run": ("finished run", "已完成的运行"),
    "lx_with_base": ("also ask the base model", "同时询问基座模型"),
    "lx_system_prompt": ("system prompt", "系统提示词"),
    "lx_trained_model": ("trained model", "训练后的模型"),
    "lx_base_model": ("base model", "基座模型"),
    "lx_message": ("message", "消息"),
    "lx_chat_image": ("image (VL runs)", "图片（视觉语言模型）"),
    "lx_chat_video": ("video (VL runs)", "视频（视觉语言模型）"),
    "lx_chat_audio": ("audio (audio runs)", "音频（音频模型）"),
    "lx_send": ("Send", "发送"),
    "lx_clear": ("Clear", "清空"),
    "lx_export": ("Export model", "导出模型"),
    "lx_predict": ("Predict + score", "预测并评分"),
    "lx_predict_limit": ("samples (empty: all)", "样本数（留空：全部）"),
    "lx_after_result": ("result", "结果"),
    "lx_metric": ("metric", "指标"),
    "lx_resume_from": ("resume from", "从检查点恢复"),
    "lx_resume": ("Resume", "恢复训练"),
    "lx_tab_evaluate": ("Evaluate & export", "评估与导出"),
    "lx_eval_run": ("run", "运行"),
    "lx_checkpoint": ("checkpoint", "检查点"),
    "lx_eval_datasets": ("datasets (empty: the run's held-out set)", "数据集（留空：该运行的留出集）"),
    "lx_batch_size": ("batch size", "批大小"),
    "lx_max_new_tokens": ("max new tokens", "最大生成长度"),
    "lx_temperature": ("temperature (0: greedy)", "温度（0：贪心）"),
    "lx_top_p": ("top-p", "Top-p 采样值"),
    "lx_scores": ("scores (ROUGE, BLEU-4, exact match; %)", "得分（ROUGE、BLEU-4、精确匹配；%）"),
    "lx_predictions_file": ("predictions file", "预测结果文件"),
    "lx_export_help": ("**Export**: a Hugging Face folder (LoRA merged) or one GGUF file; an existing target is "
                       "refused unless overwrite is ticked.",
                       "**导出**：Hugging Face 模型目录（合并 LoRA）或单个 GGUF 文件；目标已存在时拒绝，除非勾选覆盖。"),
    "lx_export_dir": ("export dir (empty: RUN_DIR/export, RUN_DIR/export-gguf)",
                      "导出目录（留空：RUN_DIR/export、RUN_DIR/export-gguf）"),
    "lx_shard_size": ("max shard size", "最大分片大小"),
    "lx_export_dtype": ("export dtype", "导出精度"),
    "lx_gguf_dtype": ("GGUF type", "GGUF 类型"),
    "lx_overwrite": ("overwrite an existing target", "覆盖已存在的目标"),
    "lx_export_gguf": ("Export GGUF", "导出 GGUF"),
    "lx_field_model_name_or_path": ("model path or hub id (empty: the model group's)",
                                    "模型路径或 Hub ID（留空：使用模型预设）"),
    "lx_field_model_dtype": ("compute type (model.dtype)", "计算类型 (model.dtype)"),
    "lx_field_data_dataset_dir": ("data folder (with dataset_info.json)", "数据目录（含 dataset_info.json）"),
    "lx_field_data_datasets": ("datasets", "数据集"),
    "lx_field_data_eval_datasets": ("eval datasets (held out)", "评估数据集（留出）"),
    "lx_field_train_grad_accum": ("gradient accumulation", "梯度累积"),
    "lx_field_train_log_every": ("log every (steps)", "日志间隔（步）"),
    "lx_field_train_eval_every": ("eval every (steps; 0: at the end)", "评估间隔（步；0：仅结束时）"),
    "lx_field_train_save_every": ("save every (steps; 0: final only)", "保存间隔（步；0：仅最终）"),
    "lx_field_method_lora_plus_lr_ratio": ("LoRA+ ratio (empty: off)", "LoRA+ 学习率比例（留空：关闭）"),
    "lx_field_method_lora_target_modules": ("LoRA targets (all, or q_proj,v_proj)", "LoRA 作用模块（all 或 q_proj,v_proj）"),
    "lx_field_method_lora_quantize": ("quantization (QLoRA)", "量化（QLoRA）"),
    "lx_field_method_kto_beta": ("KTO beta", "KTO beta 参数"),
    "lx_args_file": ("saved arguments file (YAML; empty: ROOT/saved-args/<run name>.yaml)",
                     "参数文件（YAML；留空：ROOT/saved-args/<运行名称>.yaml）"),
    "lx_args_save": ("Save arguments", "保存参数"),
    "lx_args_load": ("Load arguments", "载入参数"),
    "lx_args_result": ("saved arguments", "参数文件"),
    "lx_remove": ("Remove run", "删除运行"),
    "lx_remove_confirm": ("to remove a run with checkpoints or a model, type its name (run) here",
                          "删除含检查点或模型的运行时，请在此输入其名称（运行）"),
    "lx_run_health": ("ranks, stalls and restarts (launcher status)", "进程、停滞与重启（launcher status）"),
    "lx_field_method_grpo_num_generations": ("GRPO completions per prompt (G)", "GRPO 每个提示的生成数 (G)"),
    "lx_field_method_grpo_max_completion_length": ("max completion length (tokens)", "最大生成长度（词元）"),
    "lx_field_method_grpo_rewards": ("rewards (exact_match, format, length, module:function, rm:RUN_DIR)",
                                     "奖励函数（exact_match、format、length、module:function、rm:RUN_DIR）"),
    "lx_field_method_grpo_loss_type": ("GRPO loss type", "GRPO 损失类型"),
    "lx_field_method_grpo_beta": ("KL beta (0: no reference)", "KL 系数 beta（0：不用参考模型）"),
    "lx_field_method_ppo_reward_model": ("reward model (RUN_DIR of a finished method=rm run)",
                                         "奖励模型（已完成的 method=rm 运行目录）"),
    "lx_field_method_ppo_max_completion_length": ("max completion length (tokens)", "最大生成长度（词元）"),
    "lx_field_method_ppo_ppo_epochs": ("PPO optimizer steps per generation batch", "每批生成的 PPO 优化步数"),
    "lx_field_method_ppo_kl_coef": ("KL coefficient to the reference", "相对参考模型的 KL 系数"),
}

LANGUAGES = ("en", "zh-CN")
PREFIX = "lx_"
"""Our keys are prefixed: Gradio's own translation tables use plain words (a key "status" names one of its
namespaces, and showed as [object Object])."""


def key(name: str) -> str:
    return PREFIX + name


def required_keys() -> set:
    """Keys the app uses that are derived from the form (one per group and field)."""
    return {key(f"group_{g}") for g in GROUPS} | {key("field_" + f.key.replace(".", "_")) for f in FIELDS}


def translations() -> dict:
    """{language: {key: text}}; every key has every language (a test holds this)."""
    return {lang: {key: texts[i] for key, texts in LABELS.items()} for i, lang in enumerate(LANGUAGES)}


class Labels:
    """``t("name")``: the I18n key object of a label, for component labels and button texts."""

    def __init__(self):
        import gradio as gr

        table = translations()
        self.i18n = gr.I18n(en=table["en"], **{"zh-CN": table["zh-CN"], "zh": table["zh-CN"]})

    def __call__(self, name: str):
        if key(name) not in LABELS:
            raise KeyError(f"no label '{name}' in launcher.ui.i18n.LABELS")
        return self.i18n(key(name))


def build_i18n() -> Labels:
    return Labels()


# ------------------------------------------------------------------------------------------------ messages

MESSAGES = {
    # Compose
    "error": ("error: {detail}", "错误：{detail}"),
    "preview_ok": ("ok: preflight passed; Submit queues this", "通过：预检已通过，点击“提交”即可排队"),
    "preview_refused": ("error: {detail}", "错误：{detail}"),
    "verdict_passed": ("passed", "通过"),
    "verdict_passed_sweep": ("passed (every point)", "通过（每个超参点）"),
    "verdict_warning": ("warning: {detail}", "警告：{detail}"),
    "submitted_slurm": ("submitted SLURM job {job_id}: {run_dir}", "已提交 SLURM 作业 {job_id}：{run_dir}"),
    "started_local": ("started locally (process {pid}): {run_dir}", "已在本机启动（进程 {pid}）：{run_dir}"),
    "submitted_sweep": ("submitted sweep of {points} point(s) as job array(s) {arrays}: {sweep_dir}",
                        "已提交 {points} 个超参点的搜索，作业数组 {arrays}：{sweep_dir}"),
    "started_local_sweep": ("started a local sweep of {points} point(s) (process {pid}): {sweep_dir}",
                            "已在本机启动 {points} 个超参点的搜索（进程 {pid}）：{sweep_dir}"),
    "precision_note": ("compute: {precision}", "实际计算精度：{precision}"),
    "nothing_queued": ("nothing was queued", "未提交任何作业"),
    # Dataset preview
    "data_loading": ("tokenizing the data (cached for training)", "正在分词（结果缓存，训练时复用）"),
    "data_sample": ("sample {index}{side}: {tokens} tokens, {trained} trained", "样本 {index}{side}：{tokens} 个词元，其中 {trained} 个参与训练"),
    "data_images": (", {count} image(s)", "，{count} 张图片"),
    "data_image_caption": ("sample {index}, image {k}: {tokens} image tokens, {size}",
                           "样本 {index}，图片 {k}：{tokens} 个图像词元，{size}"),
    "data_image_caption_unknown": ("sample {index}, image {k}: {size} (image tokens: this build has no VL tokenization)",
                                   "样本 {index}，图片 {k}：{size}（图像词元数：当前版本尚无视觉语言分词）"),
    "data_image_missing": ("sample {index}, image {k}: {detail}", "样本 {index}，图片 {k}：{detail}"),
    "data_videos": (", {count} video(s)", "，{count} 段视频"),
    "data_video_caption": ("sample {index}, video {k}: {sampled} frames sampled of {of} ({shown} shown), {size},"
                           " grid {grid}, {tokens} video tokens",
                           "样本 {index}，视频 {k}：从 {of} 帧中采样 {sampled} 帧（显示 {shown} 帧），{size}，网格 {grid}，"
                           "{tokens} 个视频词元"),
    "data_video_missing": ("sample {index}, video {k}: {detail}", "样本 {index}，视频 {k}：{detail}"),
    "data_audios": (", {count} audio(s)", "，{count} 段音频"),
    "data_audio_caption": ("sample {index}, audio {k}: {seconds} s, {frames} frames, {tokens} audio tokens ({file})",
                           "样本 {index}，音频 {k}：{seconds} 秒，{frames} 帧，{tokens} 个音频词元（{file}）"),
    "data_audio_missing": ("sample {index}, audio {k}: {detail}", "样本 {index}，音频 {k}：{detail}"),
    "data_audio_more": ("(players for the first {shown} of {count} audios)", "（仅前 {shown} 段音频（共 {count} 段）可播放）"),
    "data_stats": ("{count} sample(s) shown; trained text highlighted. Counts: {stats}",
                   "显示 {count} 个样本；高亮为参与训练的文本。统计：{stats}"),
    "data_trained": ("trained", "训练"),
    # Runs
    "table_headers": ("run|state|step|loss|eval loss|ETA|requeues|job|where|started",
                      "运行|状态|步数|损失|评估损失|预计剩余|重新排队|作业|位置|开始时间"),
    "runs_summary": ("{n} run(s) under `{root}`: {counts}", "`{root}` 下共 {n} 个运行：{counts}"),
    "run_state": ("state **{state}**", "状态 **{state}**"),
    "run_job": (", job {job_id}", "，作业 {job_id}"),
    "run_step": (", step {step}", "，步数 {step}"),
    "run_loss": (", loss {loss}", "，损失 {loss}"),
    "run_eta": (", ETA {eta}", "，预计剩余 {eta}"),
    "run_requeues": (", requeues {requeues}", "，重新排队 {requeues} 次"),
    "no_run_selected": ("no run selected", "未选择运行"),
    "remove_running": ("{run}: {state}; cancel it first (a running run is never removed)",
                       "{run}：{state}；请先取消（运行中的运行不会被删除）"),
    "remove_needs_name": ("{run} holds checkpoints or a trained model: type its name ({run}) in the box beside Remove to remove it",
                          "{run} 含有检查点或训练好的模型：请在“删除运行”旁的输入框中输入其名称（{run}）后再删除"),
    "remove_not_confirmed": ("not removed", "未删除"),
    "removed": ("removed {run}", "已删除 {run}"),
    "health_phase": ("phase **{phase}** (step {step})", "阶段 **{phase}**（步数 {step}）"),
    "health_rank": ("rank {rank}: {phase}, step {step}, last progress {since} s ago ({host}, pid {pid})",
                    "进程 {rank}：{phase}，步数 {step}，{since} 秒前有进展（{host}，pid {pid}）"),
    "health_restarts": ("restarts: {n} (torchrun restarts and requeues)", "重启：{n} 次（torchrun 重启与重新排队）"),
    "health_stall": ("stall at {time}: rank(s) {ranks} in phase {phase} at step {step}; stacks in `{folder}`",
                     "停滞于 {time}：进程 {ranks} 在阶段 {phase}、步数 {step}；堆栈见 `{folder}`"),
    "health_reshard": ("resharded at step {step}: world size {from_world} -> {to_world} ({strategy}), grad_accum"
                       " {from_accum} -> {to_accum} (global batch {batch} kept)",
                       "于步数 {step} 重新分片：进程数 {from_world} -> {to_world}（{strategy}），梯度累积"
                       " {from_accum} -> {to_accum}（全局批量 {batch} 不变）"),
    "rankphase_rendezvous": ("rendezvous", "会合"),
    "rankphase_data": ("data", "数据处理"),
    "rankphase_model load": ("model load", "加载模型"),
    "rankphase_engine": ("engine", "引擎初始化"),
    "rankphase_forward/backward": ("forward/backward", "前向/反向"),
    "rankphase_collective": ("collective", "集合通信"),
    "rankphase_eval": ("eval", "评估"),
    "rankphase_checkpoint": ("checkpoint", "保存检查点"),
    "rankphase_final save": ("final save", "最终保存"),
    "rankphase_done": ("done", "完成"),
    "health_none": ("no rank has reported yet", "尚无进程报告进度"),
    "cancel_ended": ("job {job_id} already ended ({state}): nothing to cancel",
                     "作业 {job_id} 已结束（{state}）：无需取消"),
    "cancel_done": ("{output}", "已请求取消：{output}"),
    "cancel_failed": ("error: {output}", "错误：{output}"),
    "cancel_local": ("stopped the local job of {folder}", "已停止 {folder} 的本机作业"),
    "cancel_nothing": ("{run_dir}: nothing to cancel (not running, or started from a terminal: stop it there)",
                       "{run_dir}：无可取消的作业（未在运行，或是从终端启动的：请在那里停止）"),
    "state_count": ("{n} {state}", "{state} {n} 个"),
    "state_COMPLETED": ("COMPLETED", "已完成"),
    "state_RUNNING": ("RUNNING", "运行中"),
    "state_PENDING": ("PENDING", "排队中"),
    "state_FAILED": ("FAILED", "失败"),
    "state_CANCELLED": ("CANCELLED", "已取消"),
    "state_REQUEUED": ("REQUEUED", "已重新排队"),
    "state_TIMEOUT": ("TIMEOUT", "超时"),
    "state_LOST": ("LOST", "已丢失"),
    "state_UNKNOWN": ("UNKNOWN", "未知"),
    "state_OUT_OF_MEMORY": ("OUT_OF_MEMORY", "内存不足"),
    "phase_queued": ("queued", "排队中"),
    "phase_starting": ("starting", "启动中"),
    "phase_loading": ("loading model and tokenizing data", "加载模型与分词中"),
    "phase_training": ("training", "训练中"),
    "phase_evaluating": ("evaluating", "评估中"),
    "phase_saving": ("saving a checkpoint", "保存检查点中"),
    "phase_requeued": ("requeued", "已重新排队"),
    "phase_finished": ("finished", "已完成"),
    "phase_failed": ("failed", "失败"),
    "phase_cancelled": ("cancelled", "已取消"),
    "phase_unknown": ("unknown", "未知"),
    "progress_step": ("step {step}/{total}", "步数 {step}/{total}"),
    "progress_epoch": ("epoch {epoch}", "轮次 {epoch}"),
    "progress_eta": ("ETA {eta}", "预计剩余 {eta}"),
    "progress_eta_measuring": ("ETA: measuring", "预计剩余：测量中"),
    "progress_step_s": ("{seconds} s/step", "{seconds} 秒/步"),
    "progress_tokens": ("{rate} tokens/s", "{rate} 词元/秒"),
    "axis_step": ("step", "步数"),
    "axis_loss": ("loss", "损失"),
    "metric_lr": ("learning rate", "学习率"),
    "metric_loss": ("loss", "损失"),
    "metric_reward": ("reward (mean)", "奖励（均值）"),
    "axis_loss_reward": ("loss, reward", "损失、奖励"),
    "series_train": ("train", "训练"),
    "series_eval": ("eval", "评估"),
    "series_reward": ("reward", "奖励"),
    "series_eval reward": ("eval reward", "评估奖励"),
    "args_saved": ("saved: {path} (launcher train --args-file {path})", "已保存：{path}（launcher train --args-file {path}）"),
    "args_loaded": ("loaded: {path}", "已载入：{path}"),
    "metric_grad_norm": ("gradient norm", "梯度范数"),
    "metric_tokens_per_s": ("tokens/s", "词元/秒"),
    # Chat and after training
    "no_finished_run": ("no finished run selected", "未选择已完成的运行"),
    "empty_answer": ("(empty answer: the model ended its turn)", "（空回答：模型结束了这一轮）"),
    "image_refused": ("{run}: this run's model ({model}) has no vision tower, so it cannot see images; remove the"
                      " image, or chat with a VL run", "{run}：该运行的模型（{model}）没有视觉模块，无法理解图片；请移除图片，或选择视觉语言模型的运行"),
    "image_unreadable": ("error: the uploaded file is not a readable image: {detail}",
                         "错误：上传的文件不是可读取的图片：{detail}"),
    "video_refused": ("{run}: this run's model ({model}) has no vision tower, so it cannot watch videos; remove the"
                      " video, or chat with a VL run", "{run}：该运行的模型（{model}）没有视觉模块，无法理解视频；请移除视频，或选择视觉语言模型的运行"),
    "video_unreadable": ("error: the uploaded file is not a readable video: {detail}",
                         "错误：上传的文件不是可读取的视频：{detail}"),
    "audio_refused": ("{run}: this run's model ({model}) has no audio tower, so it cannot hear audio; remove the"
                      " audio, or chat with an audio run (Qwen2-Audio)",
                      "{run}：该运行的模型（{model}）没有音频模块，无法理解音频；请移除音频，或选择音频模型（Qwen2-Audio）的运行"),
    "audio_unreadable": ("error: the uploaded file is not readable audio: {detail}",
                         "错误：上传的文件不是可读取的音频：{detail}"),
    "exporting": ("exporting (merge LoRA, write safetensors)", "正在导出（合并 LoRA，写入 safetensors）"),
    "exported": ("exported: {out} ({files})", "已导出：{out}（{files}）"),
    "exported_gguf": ("exported GGUF ({dtype}): {out}", "已导出 GGUF（{dtype}）：{out}"),
    "exporting_gguf": ("writing the GGUF file", "正在写入 GGUF 文件"),
    "loading_model": ("loading the model", "正在加载模型"),
    "predicted": ("{dataset}: {n} samples; {scores}\nwritten: {out}", "{dataset}：{n} 个样本；{scores}\n已写入：{out}"),
}
"""Every message a handler shows, in English and Chinese; ``{name}`` fields are filled in both. Details that
come from the library (a config key's message, the preflight's problems, SLURM's answers) stay as the CLI
prints them: they name keys, files and commands that are the same in any language."""


def language(code: str | None) -> str:
    """The page's language (``document.documentElement.lang``, set by Gradio's language switch) as one of
    LANGUAGES: any Chinese variant is zh-CN, anything else English."""
    return "zh-CN" if (code or "").lower().startswith("zh") else "en"


def message(name: str, lang: str = "en", **params) -> str:
    texts = MESSAGES[name]
    return texts[LANGUAGES.index(language(lang))].format(**params)


class Note:
    """A message to show, as its key and fields: the library returns it, the page words it in its language."""

    def __init__(self, name: str, **params):
        if name not in MESSAGES:
            raise KeyError(f"no message '{name}' in launcher.ui.i18n.MESSAGES")
        self.name, self.params = name, params

    def text(self, lang: str = "en") -> str:
        return message(self.name, lang, **self.params)

    def __str__(self) -> str:
        return self.text("en")

    def __repr__(self) -> str:
        return f"Note({self.name!r}, {self.params!r})"


def worded(kind: str, name: str, lang: str = "en") -> str:
    """``name`` (a run state, a phase, a metric) in the page's language: the message ``<kind>_<name>``, or the
    name itself where none is written (a SLURM state or a metric this table does not know)."""
    key = f"{kind}_{name}"
    return message(key, lang) if key in MESSAGES else name
