"""Strata: JSON-lines event streams in S3 to a governed PostgreSQL warehouse."""

__version__ = "0.1.0"
