"""Audio (LLaMA-Factory's ``audios`` column and ``<audio>``) for Qwen2-Audio: token rows equal LF 0.9.5's on
mllm_audio_demo (fixtures/make_lf_audio_reference.py), the features are LF's (resampling and log-mel), the
tiny model trains on them (LoRA and full) and chats with an audio file, and bad audio is one line naming the
row, in build_datasets and in the dry run."""
import json
import math
import wave
from pathlib import Path

import numpy as np
import pytest

from launcher.checks.data import check_datasets
from launcher.checks.problems import Problems
from launcher.data import build_datasets
from launcher.errors import DataError
from tests.vl.helpers import assert_audio_rows_equal, lf_demo_dir, tokenizer_for, vl_config

DEMO = lf_demo_dir()
AUDIO_FIXTURE = Path(__file__).with_name("fixtures") / "lf_mllm_audio_demo.json"
MODEL = "tiny_qwen2_audio"
ENTRY = {"formatting": "sharegpt", "columns": {"messages": "messages", "audios": "audios"},
         "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}
needs_demo = pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")


def write_wav(path: Path, seconds: float, rate: int = 22050, channels: int = 2) -> Path:
    """A tone as 16-bit PCM WAV (stdlib only)."""
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    tone = (0.3 * np.sin(2 * math.pi * 440 * t) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(np.repeat(tone[:, None], channels, axis=1).tobytes())
    return path


def write(folder: Path, rows: list) -> None:
    columns = dict(ENTRY["columns"], **({"videos": "videos"} if any("videos" in r for r in rows) else {}))
    (folder / "d.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"d": dict(ENTRY, columns=columns, file_name="d.json")}))


def turn(text: str, answer: str = "A tone.") -> list:
    return [{"role": "user", "content": text}, {"role": "assistant", "content": answer}]


@needs_demo
def test_mllm_audio_demo_equals_llamafactory():
    fixture = json.loads(AUDIO_FIXTURE.read_text())
    expected = fixture["templates"]["qwen2_audio"]
    bundle = build_datasets(vl_config(MODEL, DEMO, ["mllm_audio_demo"], cutoff_len=8192), tokenizer_for(MODEL))
    assert bundle.stats["template"] == "qwen2_audio"  # the model family's, as LF users name it
    assert len(bundle.train) == len(expected) == 3
    assert_audio_rows_equal(bundle.train, expected)
    assert bundle.stats["audios"] == 3
    assert bundle.stats["audio_tokens"] == sum(sum(r["audio_tokens"]) for r in expected)
    # the features LF's feature extractor makes of LF's resampled waveform (sums over 128 x 3000 log-mels)
    batch = bundle.collate([bundle.train[k] for k in range(3)])
    assert batch["input_features"].shape == (3, 128, 3000)
    assert batch["feature_attention_mask"].sum(-1).tolist() == [r["feature_frames"][0] for r in expected]
    sums = batch["input_features"].double().sum((1, 2)).tolist()
    assert sums == pytest.approx([r["feature_sum"][0] for r in expected], rel=1e-4)


def test_resample_is_torchaudios():
    """Lengths follow torchaudio's ceil(n * new / old), and a tone keeps its frequency and level."""
    import torch

    from launcher.data.audio import resample

    rate = 44100
    t = torch.arange(rate) / rate
    tone = torch.sin(2 * math.pi * 440 * t)[None]
    out = resample(tone, rate, 16000)
    assert out.shape == (1, math.ceil(rate * 160 / 441))
    spectrum = torch.fft.rfft(out[0, 1000:15000]).abs()
    assert abs(int(spectrum.argmax()) * 16000 / 14000 - 440) < 2
    assert float(out[0, 1000:15000].abs().max()) == pytest.approx(1.0, abs=0.02)
    assert resample(tone, rate, rate) is tone


def test_wav_rows_tokens_and_preview(tmp_path, capsys):
    """A stereo 22.05 kHz WAV: mono at 16 kHz, ceil(samples / 160) frames, tokens as the tower counts them;
    ``launcher data preview`` shows its seconds and tokens."""
    from launcher.data.cli import data_main

    write_wav(tmp_path / "a.wav", 2.0)
    write(tmp_path, [{"messages": turn("<audio>What is it?"), "audios": ["a.wav"]}])
    bundle = build_datasets(vl_config(MODEL, tmp_path, ["d"]), tokenizer_for(MODEL))
    row = bundle.train[0]
    samples = math.ceil(44100 * 320 / 441)  # 2 s at 22.05 kHz -> 16 kHz (divided by their gcd: 441 -> 320)
    frames = math.ceil(samples / 160)
    tokens = ((frames - 1) // 2 + 1 - 2) // 2 + 1
    assert row["audio_grid"] == [[samples, frames, tokens]]
    assert row["input_ids"].count(151646) == tokens and tokens == 50
    assert all(y == -100 for t, y in zip(row["input_ids"], row["labels"]) if t in (151646, 151647, 151648))
    assert data_main(["preview", "-n", "1", "--color", "never", f"model={MODEL}", f"data.dataset_dir={tmp_path}",
                      "data.datasets=[d]", "data.use_cache=false"]) == 0
    out = capsys.readouterr().out
    assert f"audio 0: 2.00 s, {frames} frames -> {tokens} tokens" in out
    assert f"<|audio_bos|><|AUDIO|>*{tokens}<|audio_eos|>What is it?" in out


BAD = [
    ("missing", r"row 0: .*audio file not found: .*nope\.wav"),
    ("not_audio", r"row 0: .*not audio FFmpeg can read"),
    ("empty", r"row 0: .*has no samples \(0 s\)"),
    ("count", r"row 0: 1 <audio> placeholder\(s\) in the text but 2 audios"),
    ("long", r"row 0: .*is 31\.0 s but the model hears at most 30 s"),
    ("budget", r"row 0: .*audio 0 \(.*a\.wav, 2\.0 s\) takes 52 tokens but data\.cutoff_len is 40"),
    ("text_model", r"row 0: .*the row has audios but model .* has no audio tower"),
    ("with_video", r"row 0: the row has audios and videos: a model that takes both \(the Qwen2.5-Omni thinker"),
]


def bad_rows(tmp_path: Path, case: str) -> tuple[list, dict]:
    write_wav(tmp_path / "a.wav", 2.0)
    audio, text, extra = "a.wav", "<audio>What is it?", {}
    if case == "missing":
        audio = "nope.wav"
    elif case == "not_audio":
        (tmp_path / "bad.wav").write_text("not audio at all")
        audio = "bad.wav"
    elif case == "empty":
        write_wav(tmp_path / "empty.wav", 0.0)
        audio = "empty.wav"
    elif case == "long":
        write_wav(tmp_path / "long.wav", 31.0, rate=8000, channels=1)
        audio = "long.wav"
    elif case == "budget":
        extra = {"cutoff_len": 40}
    audios = [audio, "a.wav"] if case == "count" else [audio]
    if case == "with_video":  # LF's mllm_video_audio_demo shape
        return [{"messages": turn("<video>" + text), "audios": audios, "videos": ["a.wav"]}], extra
    return [{"messages": turn(text), "audios": audios}], extra


@pytest.mark.parametrize("case,message", BAD, ids=[c for c, _ in BAD])
def test_bad_audio_is_one_line_naming_the_row(tmp_path, case, message):
    rows, extra = bad_rows(tmp_path, case)
    write(tmp_path, rows)
    model = "tiny_qwen2_vl" if case == "text_model" else MODEL
    with pytest.raises(DataError, match=message) as caught:
        build_datasets(vl_config(model, tmp_path, ["d"], **extra), tokenizer_for(model))
    assert "\n" not in str(caught.value).strip()


@pytest.mark.parametrize("case,message", [BAD[0], BAD[2], BAD[4]], ids=["missing", "empty", "long"])
def test_dry_run_names_the_bad_audio(tmp_path, case, message):
    rows, extra = bad_rows(tmp_path, case)
    write(tmp_path, rows)
    problems = Problems()
    check_datasets(problems, vl_config(MODEL, tmp_path, ["d"], **extra))
    assert any(__import__("re").search(message.replace("row 0: .*", ""), str(p)) for p in problems.errors), \
        problems.errors


@needs_demo
@pytest.mark.parametrize("method", ["sft_full", "lora"])
def test_trains_on_mllm_audio_demo_exports_and_chats(tmp_path, method):
    """A few steps of full and LoRA SFT on LF's audio demo (tiny Qwen2-Audio): the loss falls and the run saves the
    feature extractor beside the model; the full run exports and chats with an audio file (what ``launcher chat
    RUN_DIR --audio PATH`` / ``/audio PATH`` do)."""
    import torch

    from recipes.sft import SFTRecipe
    from tests.recipe_runs import run_recipe

    overrides = [f"model={MODEL}", "data=mllm_audio_demo", f"data.dataset_dir={DEMO}", "data.use_cache=false",
                 f"method={method}", "method.lr=1e-2", "train.micro_batch_size=3", "train.grad_accum=1",
                 "train.max_steps=3", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.eval_every=0",
                 "train.log_every=1", "train.exact_match_samples=0"]
    recipe, run_dir, summary = run_recipe(SFTRecipe, tmp_path / "outputs", overrides)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    saved = json.loads((run_dir / "model" / "preprocessor_config.json").read_text())
    assert saved["feature_size"] == 128 and saved["processor_class"] == "Qwen2AudioProcessor"
    tuned = {n for n, p in recipe.model.named_parameters() if p.requires_grad}
    assert tuned and not any("audio_tower" in n or "multi_modal_projector" in n for n in tuned)  # LF's defaults
    if method == "lora":
        assert all("lora_" in n for n in tuned)
        return
    from launcher.export.hf import ExportArgs, export_run
    from launcher.inference.chat_session import ChatSession, GenerationOptions
    from launcher.inference.prompts import prompt_renderer
    from launcher.inference.trained import load_trained_model

    out = tmp_path / "exported"
    export_run(run_dir, ExportArgs(out=str(out)))
    assert (out / "preprocessor_config.json").is_file()
    assert "<|audio_bos|><|AUDIO|><|audio_eos|>" in (out / "chat_template.jinja").read_text()
    reloaded, _ = load_trained_model(run_dir)
    assert type(reloaded).__name__ == "Qwen2AudioForConditionalGeneration"
    clip = str(DEMO / "mllm_demo_data" / "2.wav")
    session = ChatSession(reloaded.eval(), recipe.tokenizer, prompt_renderer(recipe.tokenizer, recipe.cfg),
                          torch.device("cpu"), GenerationOptions(max_new_tokens=3), audio=recipe.data.audio)
    session.attach_audio(clip)
    answer, prompt = session.reply("What can you hear?")
    assert prompt.count("<|audio_bos|>") == 1 and prompt.count("<|AUDIO|>") == 73 and session.audios == [clip]
    with pytest.raises(DataError, match="/audio: audio file not found"):
        session.attach_audio(str(DEMO / "missing.wav"))
    # the terminal loop's /audio (``launcher chat``): attached to the next message, a bad path one line
    import io

    from launcher.inference.chat import TurnLog, chat_loop

    session.reset()
    out = io.StringIO()
    turns = chat_loop(session, TurnLog(None), io.StringIO(f"/audio {clip}\n/audio nope.wav\nWhat is it?\n"), out,
                      io.StringIO(), False)
    assert turns == 1 and f"(audio {clip} attached to your next message)" in out.getvalue()
    assert "error: nope.wav: audio file not found" in out.getvalue() or "audio file not found: nope.wav" in out.getvalue()
    assert session.audios == [clip] and "<audio>What is it?" in session.history[0]["content"]
    # the held-out exact-match check generates with the samples' audio (the trainer's train.exact_match_samples)
    from launcher.inference.generation import exact_match_eval

    sample = {"messages": [{"role": "user", "content": "<audio>What can you hear?"},
                           {"role": "assistant", "content": "A woman is coughing."}], "audios": [clip]}
    scored = exact_match_eval(reloaded, recipe.tokenizer, [sample] * 2, 3, torch.device("cpu"),
                              prompt_renderer(recipe.tokenizer, recipe.cfg))
    assert scored["n"] == 2 and scored["examples"][0]["prediction"] == scored["examples"][1]["prediction"]


def test_packed_audio_rows_match_their_rows_alone(tmp_path):
    """Two audio rows packed into one: each audio's features fill its own tokens, and the packed hidden states
    equal each row's alone (the block mask keeps the samples apart)."""
    import torch

    from launcher.training.loss import backbone_hidden
    from tests.vl.helpers import tiny_model

    write_wav(tmp_path / "a.wav", 1.0)
    write_wav(tmp_path / "b.wav", 0.5, rate=16000, channels=1)
    write(tmp_path, [{"messages": turn("<audio>First?"), "audios": ["a.wav"]},
                     {"messages": turn("Second: <audio>", "Shorter."), "audios": ["b.wav"]}])
    tokenizer = tokenizer_for(MODEL)
    packed = build_datasets(vl_config(MODEL, tmp_path, ["d"], packing=True, cutoff_len=256), tokenizer)
    alone = build_datasets(vl_config(MODEL, tmp_path, ["d"]), tokenizer)
    assert len(packed.train) == 1 and packed.train[0]["audios"] == [str(tmp_path / "a.wav"), str(tmp_path / "b.wav")]
    model = tiny_model(MODEL).eval()

    def hidden(bundle, rows):
        batch = bundle.collate(rows)
        with torch.no_grad():
            return backbone_hidden(model, batch["input_ids"], batch.get("attention_mask"), batch.get("position_ids"),
                                   batch)

    together = hidden(packed, [packed.train[0]])[0]
    start = 0
    for row in alone.train:
        n = len(row["input_ids"])
        assert torch.allclose(together[start: start + n], hidden(alone, [row])[0, :n], atol=1e-4)
        start += n
