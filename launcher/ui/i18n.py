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
    "lx_tab_chat": ("Chat & after training", "对话与训练后"),
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
    "lx_field_method_lora_alpha": ("LoRA alpha", "LoRA alpha"),
    "lx_field_method_dpo_beta": ("DPO beta", "DPO beta"),
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
    "lx_send": ("Send", "发送"),
    "lx_clear": ("Clear", "清空"),
    "lx_after_help": ("**After training**: export writes RUN_DIR/export (LoRA merged); predict scores the run's eval "
                   "data (ROUGE-1/2/L, BLEU-4, exact match).",
                   "**训练后**：导出写入 RUN_DIR/export（合并 LoRA）；预测在评估数据上打分（ROUGE-1/2/L、BLEU-4、精确匹配）。"),
    "lx_export": ("Export model", "导出模型"),
    "lx_predict": ("Predict + score", "预测并评分"),
    "lx_predict_limit": ("samples (empty: all)", "样本数（留空：全部）"),
    "lx_after_result": ("result", "结果"),
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
