"""The Chat tab: talk to a finished run (and its base model side by side), export it, score its predictions."""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from launcher.errors import LauncherError
from launcher.ui import after
from launcher.ui.i18n import message
from launcher.ui.tabs.page import Page, failure


@dataclass
class ChatTab:
    chat_run: gr.Dropdown
    with_base: gr.Checkbox
    system: gr.Textbox
    bot: gr.Chatbot
    base_bot: gr.Chatbot
    message_box: gr.Textbox
    chat_image: gr.Image
    chat_video: gr.Video
    chat_audio: gr.Audio
    send_btn: gr.Button
    clear_btn: gr.Button
    chat_status: gr.Markdown
    checkpoint: gr.Dropdown
    temperature: gr.Number
    top_p: gr.Number
    max_new_tokens: gr.Number


def refused(kind: str, lang: str, **params) -> str:
    """Why a run does not take an uploaded image, video or audio clip."""
    return {"image": message("image_refused", lang, **params), "video": message("video_refused", lang, **params),
            "audio": message("audio_refused", lang, **params)}[kind]


def unreadable(kind: str, lang: str, **params) -> str:
    """Why an upload cannot be attached (not a readable image, video or audio clip)."""
    return {"image": message("image_unreadable", lang, **params),
            "video": message("video_unreadable", lang, **params),
            "audio": message("audio_unreadable", lang, **params)}[kind]


def layout(t) -> ChatTab:
    with gr.Tab(t("tab_chat"), id="chat", elem_id="tab-chat"):
        with gr.Row():
            chat_run = gr.Dropdown([], label=t("chat_run"), elem_id="chat-run", scale=3)
            checkpoint = gr.Dropdown(["final"], value="final", label=t("checkpoint"), elem_id="chat-checkpoint",
                                     scale=1)
            with_base = gr.Checkbox(label=t("with_base"), value=True, elem_id="with-base", scale=1)
        with gr.Row():
            system = gr.Textbox(label=t("system_prompt"), elem_id="system-prompt", scale=3)
            temperature = gr.Number(value=0.0, minimum=0, label=t("temperature"), elem_id="chat-temperature",
                                    min_width=100)
            top_p = gr.Number(value=1.0, minimum=0, maximum=1, label=t("top_p"), elem_id="chat-top-p", min_width=100)
            max_new_tokens = gr.Number(value=128, precision=0, minimum=1, label=t("max_new_tokens"),
                                       elem_id="chat-max-new-tokens", min_width=100)
        with gr.Row():
            bot = gr.Chatbot(label=t("trained_model"), elem_id="chat-trained", height=300)
            base_bot = gr.Chatbot(label=t("base_model"), elem_id="chat-base", height=300)
        with gr.Row():
            message_box = gr.Textbox(label=t("message"), elem_id="chat-message", scale=4)
            chat_image = gr.Image(label=t("chat_image"), type="filepath", sources=["upload"],
                                  elem_id="chat-image", height=140, scale=1)
            chat_video = gr.Video(label=t("chat_video"), sources=["upload"], elem_id="chat-video", height=140,
                                  scale=1)
            chat_audio = gr.Audio(label=t("chat_audio"), type="filepath", sources=["upload"], elem_id="chat-audio",
                                  scale=1)
            send_btn = gr.Button(t("send"), variant="primary", elem_id="send-btn", scale=0)
            clear_btn = gr.Button(t("clear"), elem_id="clear-btn", scale=0)
        chat_status = gr.Markdown(elem_id="chat-status")
    return ChatTab(chat_run, with_base, system, bot, base_bot, message_box, chat_image, chat_video, chat_audio,
                   send_btn, clear_btn,
                   chat_status, checkpoint, temperature, top_p, max_new_tokens)


def wire(page: Page, tab: ChatTab) -> None:
    on, run_path = page.on, page.run_path
    # {"trained"|"base": after.new_conversation()}: what each model's ChatSession keeps between turns.
    conversations = gr.State({})

    def on_send(rel, text, image, video, audio, system_text, history, base_history, compare_base, convs,
                checkpoint, temperature, top_p, max_new_tokens, lang):
        path = run_path(rel)
        history, base_history = list(history or []), list(base_history or [])
        convs = {k: dict(v) for k, v in (convs or {}).items()}
        keep = (gr.update(),) * 3  # the uploads stay when a turn is refused: fix it and send again
        if path is None or not (text or "").strip():
            yield history, base_history, text, convs, "", *keep
            return
        text = text.strip()
        uploads = {kind: upload for kind, upload in zip(after.MEDIA, (image, video, audio)) if upload}
        kept = {}
        if uploads:
            takes = after.run_takes(path)
            for kind, upload in uploads.items():
                try:
                    upload = str(page.allowed.check(upload, f"chat {kind}"))
                except LauncherError as exc:
                    yield history, base_history, text, convs, unreadable(kind, lang, detail=exc), *keep
                    return
                if kind not in takes:
                    from launcher.config.schema import load_run_config

                    model_name = load_run_config(path).model.name
                    yield (history, base_history, text, convs,
                           refused(kind, lang, run=rel, model=model_name), *keep)
                    return
                try:
                    kept[kind] = after.keep_upload(path, upload, kind)
                except LauncherError as exc:
                    yield history, base_history, text, convs, unreadable(kind, lang, detail=exc), *keep
                    return
                uploads[kind] = upload
        targets = [(False, history)] + ([(True, base_history)] if compare_base else [])
        try:
            for base, shown in targets:
                conversation = convs.setdefault("base" if base else "trained", after.new_conversation())
                asked = len(shown)
                for kind in kept:
                    shown.append({"role": "user", "content": {"path": uploads[kind]}})
                shown.append({"role": "user", "content": text})
                shown.append({"role": "assistant", "content": ""})
                try:
                    for partial in after.stream_reply(
                            path, conversation, text, system_text, base=base, image=kept.get("image"),
                            video=kept.get("video"), audio=kept.get("audio"),
                            max_new_tokens=int(max_new_tokens or 128), temperature=float(temperature or 0),
                            top_p=float(top_p or 1.0),
                            checkpoint=None if checkpoint in (None, "", "final") else checkpoint):
                        shown[-1] = {"role": "assistant", "content": partial or "…"}
                        yield history, base_history, "", convs, "", None, None, None
                except LauncherError:  # a file the session cannot read: the turn is not shown as asked
                    del shown[asked:]
                    raise
                if not shown[-1]["content"].strip("…"):
                    shown[-1] = {"role": "assistant", "content": message("empty_answer", lang)}
                yield history, base_history, "", convs, "", None, None, None
        except Exception as exc:  # noqa: BLE001 - shown beside the chat as its one line, never a bare "Error"
            yield history, base_history, text, convs, failure(exc, lang), *keep

    send_inputs = [tab.chat_run, tab.message_box, tab.chat_image, tab.chat_video, tab.chat_audio, tab.system,
                   tab.bot, tab.base_bot, tab.with_base, conversations, tab.checkpoint, tab.temperature, tab.top_p,
                   tab.max_new_tokens]
    send_outputs = [tab.bot, tab.base_bot, tab.message_box, conversations, tab.chat_status, tab.chat_image,
                    tab.chat_video, tab.chat_audio]
    on(tab.send_btn.click, on_send, send_inputs, send_outputs)
    on(tab.message_box.submit, on_send, send_inputs, send_outputs)
    cleared = [tab.bot, tab.base_bot, conversations, tab.chat_status]
    tab.clear_btn.click(lambda: ([], [], {}, ""), None, cleared)

    def on_run(rel):
        """The run's checkpoints to chat with (final first); a new run starts a new conversation."""
        path = run_path(rel)
        choices = ["final"] + (after.checkpoints(path) if path is not None else [])
        return [], [], {}, "", gr.update(choices=choices, value="final")

    tab.chat_run.change(on_run, [tab.chat_run], cleared + [tab.checkpoint], show_progress="hidden")
    tab.checkpoint.input(lambda _: ([], [], {}, ""), [tab.checkpoint], cleared)
