"""Dataset uploads: validated CSV / JSONL files owned by a tenant."""
