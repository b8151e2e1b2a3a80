"""Export a run's model for other tools: one Hugging Face folder with LoRA merged (``hf``; sharded checkpoints
streamed tensor by tensor: ``stream``), or one GGUF file for llama.cpp (``gguf``); ``cli`` is ``launcher export``."""
