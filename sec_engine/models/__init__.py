"""Finding and loading base models (safely: safetensors only, never remote code)."""
