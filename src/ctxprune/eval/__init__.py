"""Metrics and measured costs."""
