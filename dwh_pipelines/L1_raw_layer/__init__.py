"""Lake → raw_db: append-only binary COPY with lineage, exactly once per batch."""
