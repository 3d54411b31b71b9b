"""Source → lake: each source object exactly once into parquet, bad lines into quarantine."""
