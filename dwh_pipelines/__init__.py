"""Warehouse layers L1-L5: one folder per table plus the runner (issues #3-#4)."""
