"""The serving engine behind hosted deployments (README: hosted inference).

- `artifact`: fetch an artifact archive, check its sha256 against the record, extract it
  safely and check every file's sha256 against the manifest, all before anything is loaded.
- `encoder`: tokenization with the `tokenizers` library from the artifact's tokenizer.json,
  truncated to the model's maximum length and padded to the longest sequence of a batch.
- `model`: the ONNX Runtime session (CPU provider, configured intra-op threads) and the
  probabilities for a batch. Only ONNX and JSON files are read: never a pickle, never
  `trust_remote_code` (there is no transformers import in this process at all).
- `batcher`: dynamic micro-batching over a bounded queue (429 when full).
- `cache`: the LRU of loaded models, bounded by count and approximate memory.
- `manager`: ties them to deployments: warm-up, lazy reload, predict, unload.

Nothing here imports torch or transformers: the API process stays light, and a test checks it.
"""
