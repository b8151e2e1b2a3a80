"""``launcher serve``: an OpenAI-compatible HTTP API over a trained run, an export or a local HF model folder.

openai_protocol (request parsing, error bodies; pure) -> engine (model loading, streamed generation) ->
app (FastAPI routes, auth, one generation at a time) -> cli (arguments, bind checks, uvicorn).
"""
