"""Thin integrations that put gates into upstream models, and converters that produce those models."""
