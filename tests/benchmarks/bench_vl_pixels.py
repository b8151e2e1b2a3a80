"""Why pixels are made per batch, not cached with the tokens: what each choice costs per image.

    PYTHONPATH=. python tests/benchmarks/bench_vl_pixels.py

For images of a few sizes (mllm_demo's photos when the demo folder is there, and generated 768x768 /
1024x1024 ones), prints with Qwen2-VL's and Qwen3-VL's processors (PIL here; the torchvision one where it
loads): image tokens, the pixel_values a cache would hold (MB, fp32), and the time to decode + resize + process
one image (ms, median of 5). Compare with the seconds a training step takes.
"""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from launcher.data.vision import VisionData, image_grid, image_token_count, load_pixels  # noqa: E402
from launcher.models.vision import VisionModelInfo, build_image_processor  # noqa: E402
from tests.data.helpers import lf_demo_dir  # noqa: E402


def main() -> int:
    from PIL import Image

    tmp = Path(tempfile.mkdtemp())
    paths = []
    demo = lf_demo_dir()
    if demo is not None:
        paths += sorted(str(p) for p in (demo / "mllm_demo_data").glob("*.jpg"))
    for side in (768, 1024):
        path = tmp / f"noise{side}.png"
        Image.effect_noise((side, side), 64).convert("RGB").save(path)
        paths.append(str(path))
    print(f"{'family':10} {'image':28} {'size':>10} {'tokens':>7} {'cache MB':>9} {'ms/image':>9}")
    for family in ("qwen2_vl", "qwen3_vl"):
        vision = VisionData(build_image_processor(VisionModelInfo(family, family)))
        for path in paths:
            with Image.open(path) as im:
                size = im.size
            grid = image_grid(*size, vision)
            times = []
            for _ in range(5):
                start = time.perf_counter()
                out = load_pixels([path], [grid], vision)
                times.append((time.perf_counter() - start) * 1000)
            mb = out["pixel_values"].numel() * 4 / 1e6
            print(f"{family:10} {Path(path).name:28} {size[0]}x{size[1]:<5} {image_token_count(grid, vision.merge_size):>7}"
                  f" {mb:>9.2f} {statistics.median(times):>9.1f}")
    print(f"processor: {type(vision.image_processor).__name__}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
