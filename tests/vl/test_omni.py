"""The Qwen2.5-Omni thinker (model=tiny_qwen2_5_omni): audio, images and video in one row and LLaMA-Factory's
use_audio_in_video. Token rows equal LF 0.9.5's on mllm_audio_demo and mllm_video_audio_demo
(fixtures/make_lf_omni_reference.py), the log-mels are LF's over each audio's frames, the tiny thinker trains
on them (LoRA and full) and exports, and bad rows are one line naming the row."""
import json
import re
from pathlib import Path

import pytest

from launcher.data import build_datasets
from launcher.errors import DataError
from tests.vl.helpers import assert_audio_rows_equal, lf_demo_dir, tokenizer_for, vl_config, write_video
from tests.vl.test_audio import turn, write_wav

DEMO = lf_demo_dir()
FIXTURE = Path(__file__).with_name("fixtures") / "lf_omni_demo.json"
MODEL = "tiny_qwen2_5_omni"
needs_demo = pytest.mark.skipif(DEMO is None, reason="LLaMA-Factory demo data not found (../shared/datasets)")
CASES = {"mllm_audio_demo": ("mllm_audio_demo", False), "mllm_video_audio_demo": ("mllm_video_audio_demo", False),
         "mllm_video_audio_demo+use_audio_in_video": ("mllm_video_audio_demo", True)}


@needs_demo
@pytest.mark.parametrize("case", list(CASES))
def test_rows_equal_llamafactory(case):
    dataset, in_video = CASES[case]
    expected = json.loads(FIXTURE.read_text())["cases"][case]
    bundle = build_datasets(vl_config(MODEL, DEMO, [dataset], cutoff_len=8192, use_audio_in_video=in_video),
                            tokenizer_for(MODEL))
    assert bundle.stats["template"] == "qwen2_omni"
    assert len(bundle.train) == len(expected) == 3
    assert_audio_rows_equal(bundle.train, expected)
    for k, (ours, lf) in enumerate(zip(bundle.train, expected)):
        if "video_grid_thw" in lf:
            assert ours["video_grid_thw"] == lf["video_grid_thw"], f"row {k}"
            assert ours["video_second_per_grid"] == pytest.approx(lf["video_second_per_grid"], rel=1e-6)
    # the log-mels of LF's resampled waveforms, over each audio's own frames (ours padded to the batch, LF's to 300 s)
    batch = bundle.collate([bundle.train[k] for k in range(3)])
    mask = batch["feature_attention_mask"]
    assert mask.sum(-1).tolist() == [r["feature_frames"][0] for r in expected]
    sums = [float(batch["input_features"][i, :, :f].double().sum()) for i, f in enumerate(mask.sum(-1).tolist())]
    assert sums == pytest.approx([r["feature_sum"][0] for r in expected], rel=1e-4)
    assert batch.get("use_audio_in_video", False) is in_video and "position_ids" not in batch


def test_interleaved_chunks_and_thinker_positions():
    """use_audio_in_video: a 5 s video at 2 fps (5 temporal patches of 1 s) and 5 s of audio interleave in 2 s
    chunks of 50 time positions; the thinker's own get_rope_index gives the span's video tokens their patch
    times and its audio tokens their index (so our chunk order is the one it lays out)."""
    from launcher.data.omni import chunked_index, video_token_times

    times = video_token_times([5, 4, 4], 1.0, 2)  # 4 tokens per temporal patch
    assert times == [0] * 4 + [25] * 4 + [50] * 4 + [75] * 4 + [100] * 4
    assert chunked_index(times) == [(0, 8), (8, 16), (16, 20)]
    assert chunked_index(list(range(125))) == [(0, 50), (50, 100), (100, 125)]
    # the thinker's own get_rope_index (no weights: it reads only the config) on the span our text makes
    import types

    import torch
    from transformers import AutoConfig
    from transformers.models.qwen2_5_omni.modeling_qwen2_5_omni import (
        Qwen2_5OmniPreTrainedModelForConditionalGeneration as Thinker)

    from launcher.data.omni import interleaved_text
    from tests.vl.helpers import model_yaml

    bundle_tokens = tokenizer_for(MODEL)
    vision = types.SimpleNamespace(vision_start="<|vision_bos|>", vision_end="<|vision_eos|>", video_pad="<|VIDEO|>")
    audio = types.SimpleNamespace(audio_bos="<|audio_bos|>", audio_eos="<|audio_eos|>", audio_pad="<|AUDIO|>")
    text = "Hi" + interleaved_text(20, times, 125, vision, audio) + "?"
    ids = bundle_tokens(text)["input_ids"]
    config = AutoConfig.for_model("qwen2_5_omni_thinker", **model_yaml(MODEL)["config"])
    index = types.SimpleNamespace(config=config, spatial_merge_size=2)
    for name in ("get_llm_pos_ids_for_vision", "get_chunked_index"):
        setattr(index, name, types.MethodType(getattr(Thinker, name), index))
    positions, _ = Thinker.get_rope_index(index, torch.tensor([ids]), video_grid_thw=torch.tensor([[5, 4, 4]]),
                                          attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                          use_audio_in_video=True, audio_seqlens=torch.tensor([500]),
                                          second_per_grids=torch.tensor([1.0]))
    temporal = positions[0, 0].tolist()
    ids_t = torch.tensor(ids)
    start = temporal[ids.index(151647)] + 1  # after <|vision_bos|><|audio_bos|>, which share one position
    assert [temporal[i] - start for i in torch.nonzero(ids_t == 151656).flatten().tolist()] == times
    assert [temporal[i] - start for i in torch.nonzero(ids_t == 151646).flatten().tolist()] == list(range(125))


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("omni")
    write_video(folder / "v.mp4", frames=8, size=(56, 56), fps=4)
    write_wav(folder / "a.wav", 2.0)
    return folder


def _write(folder: Path, rows: list) -> None:
    columns = {"messages": "messages"}
    for key in ("images", "videos", "audios"):
        if any(key in r for r in rows):
            columns[key] = key
    (folder / "d.json").write_text(json.dumps(rows))
    (folder / "dataset_info.json").write_text(json.dumps({"d": {
        "formatting": "sharegpt", "file_name": "d.json", "columns": columns,
        "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}}}))


BAD = [
    ("video_without_audio", {"videos": ["v.mp4"]}, "<video>What?", True,
     r"row 0: data.use_audio_in_video pairs each video with an audio, but the row has 1 video\(s\) and 0 audio"),
    ("audio_before_video", {"videos": ["v.mp4"], "audios": ["a.wav"]}, "<audio><video>What?", True,
     r"row 0: with data.use_audio_in_video each <video> must be followed by an <audio>; the user message has an"),
    ("silent_video_as_audio", {"videos": ["v.mp4"], "audios": ["v.mp4"]}, "<video><audio>What?", True,
     r"row 0: .*v\.mp4 has no audio stream"),
    ("budget", {"videos": ["v.mp4"], "audios": ["a.wav"]}, "<video><audio>What?", True,
     r"row 0: data.cutoff_len=60 cuts through the row's media tokens"),
]


@pytest.mark.parametrize("case,media,text,in_video,message", BAD, ids=[b[0] for b in BAD])
def test_bad_rows_are_one_line_naming_the_row(tmp_path, clip_dir, case, media, text, in_video, message):
    for name in ("v.mp4", "a.wav"):
        (tmp_path / name).symlink_to(clip_dir / name)
    _write(tmp_path, [dict(messages=turn(text), **media)])
    extra = {"cutoff_len": 60} if case == "budget" else {}
    with pytest.raises(DataError, match=message) as caught:
        build_datasets(vl_config(MODEL, tmp_path, ["d"], use_audio_in_video=in_video, **extra), tokenizer_for(MODEL))
    assert "\n" not in str(caught.value).strip()


def test_use_audio_in_video_needs_the_thinker(tmp_path, clip_dir):
    (tmp_path / "a.wav").symlink_to(clip_dir / "a.wav")
    _write(tmp_path, [{"messages": turn("<audio>What?"), "audios": ["a.wav"]}])
    with pytest.raises(DataError, match=r"data.use_audio_in_video: only the Qwen2.5-Omni thinker"):
        build_datasets(vl_config("tiny_qwen2_audio", tmp_path, ["d"], use_audio_in_video=True),
                       tokenizer_for("tiny_qwen2_audio"))


def test_llamafactory_yaml_use_audio_in_video_translates():
    from launcher.config.llamafactory import translate

    lf = {"model_name_or_path": "Qwen/Qwen2.5-Omni-7B", "stage": "sft", "do_train": True, "finetuning_type": "lora",
          "dataset": "mllm_video_audio_demo", "template": "qwen2_omni", "use_audio_in_video": True,
          "output_dir": "saves/x"}
    translated = translate(lf)
    assert "data.use_audio_in_video=true" in " ".join(str(o) for o in translated.overrides).lower()


@needs_demo
@pytest.mark.parametrize("method", ["sft_full", "lora"])
def test_trains_on_mllm_video_audio_demo(tmp_path, method):
    """Two steps of full and LoRA SFT on LF's video+audio demo with use_audio_in_video (tiny thinker): the loss
    falls, the towers stay frozen (LF's defaults), and the saved model has Omni's processor files."""
    from recipes.sft import SFTRecipe
    from tests.recipe_runs import run_recipe

    overrides = [f"model={MODEL}", "data=mllm_video_audio_demo", f"data.dataset_dir={DEMO}", "data.use_cache=false",
                 # one row, fewer frames: the same span layout at a third of the cost (the test is about training)
                 "data.max_samples=1", "data.video_fps=1.0",
                 f"method={method}", "method.lr=1e-2", "train.micro_batch_size=1", "train.grad_accum=1",
                 "train.max_steps=2", "train.warmup_steps=0", "train.lr_scheduler=constant", "train.eval_every=0",
                 "train.log_every=1", "train.exact_match_samples=0"]
    recipe, run_dir, summary = run_recipe(SFTRecipe, tmp_path / "outputs", overrides)
    losses = [json.loads(line)["loss"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()
              if json.loads(line)["kind"] == "train"]
    assert len(losses) == 2 and losses[-1] < losses[0], losses
    tuned = {n for n, p in recipe.model.named_parameters() if p.requires_grad}
    assert tuned and not any(re.search(r"audio_tower|visual\.(blocks|patch_embed|merger)", n) for n in tuned)
    if method == "lora":
        assert all("lora_" in n for n in tuned)
        return
    saved = json.loads((run_dir / "model" / "preprocessor_config.json").read_text())
    assert saved["processor_class"] == "Qwen2_5OmniProcessor" and saved["chunk_length"] == 300
    assert saved["patch_size"] == 14 and saved["feature_size"] == 128
    template = (run_dir / "model" / "chat_template.jinja").read_text()
    assert "<|vision_bos|><|VIDEO|><|vision_eos|>" in template and "<|audio_bos|><|AUDIO|><|audio_eos|>" in template


@needs_demo
def test_dry_run_passes_the_demo_and_names_a_bad_pair(tmp_path, clip_dir):
    """The dry run (check_datasets) takes LF's video+audio demo for the thinker, and names a video without its
    audio under use_audio_in_video."""
    from launcher.checks.data import check_datasets
    from launcher.checks.problems import Problems

    problems = Problems()
    check_datasets(problems, vl_config(MODEL, DEMO, ["mllm_video_audio_demo"], use_audio_in_video=True))
    assert not problems.errors, problems.errors
    (tmp_path / "v.mp4").symlink_to(clip_dir / "v.mp4")
    _write(tmp_path, [{"messages": turn("<video>What?"), "videos": ["v.mp4"]}])
    problems = Problems()
    check_datasets(problems, vl_config(MODEL, tmp_path, ["d"], use_audio_in_video=True))
    assert any(re.search(r"row 0: data.use_audio_in_video pairs each video with an audio", str(p))
               for p in problems.errors), problems.errors


def test_preflight_knows_the_thinker():
    """model.arch qwen2_5_omni_thinker lives in transformers' qwen2_5_omni folder; builtin:qwen2_5_omni is built in."""
    from launcher.checks.model import BUILTIN_TOKENIZERS, check_random_init_arch

    check_random_init_arch("qwen2_5_omni_thinker")
    assert "builtin:qwen2_5_omni" in BUILTIN_TOKENIZERS


def test_generation_with_the_omni_thinker_is_refused_in_one_line():
    """chat/serve/predict render a VL or an audio model's prompt; with both towers (the thinker) that would drop
    the images and videos without a word."""
    from launcher.errors import ConfigError
    from launcher.inference.chat_session import ChatSession, GenerationOptions

    with pytest.raises(ConfigError, match="chat: the Qwen2.5-Omni thinker trains and exports here, but generating"):
        ChatSession(None, None, None, "cpu", GenerationOptions(), vision=object(), audio=object())
