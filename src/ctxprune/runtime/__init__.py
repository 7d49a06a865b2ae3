"""Decoding that honours per-row masks: static KV cache, greedy search, language detection."""
