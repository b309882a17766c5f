"""Base models: the built-in ones and the tenant's uploaded HF-format archives."""
