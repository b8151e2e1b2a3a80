"""Models and tokenizers, the base layer: what a config names (a hub id, a folder, or a random-init
architecture) built or loaded whole (``build``), QLoRA's quantized base (``quantize``), tokenizers and the VL
families (``vision``). It imports nothing above the config; building for a parallelism is
launcher.engines.model_build, reading a finished run back launcher.inference.trained."""
