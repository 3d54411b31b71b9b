"""Pipelines that feed the data lake: the source simulator and the raw (L1) load into the lake."""
