"""A deterministic door2door fleet that writes JSON-lines event files into an object store."""

from datalake_pipelines.source_simulator.simulator import (
    DEFECT_KINDS,
    KEPT_KINDS,
    MAX_SPEED_KMH,
    QUARANTINE_KINDS,
    SimulationConfig,
    SimulationResult,
    simulate,
)

__all__ = [
    "DEFECT_KINDS",
    "KEPT_KINDS",
    "MAX_SPEED_KMH",
    "QUARANTINE_KINDS",
    "SimulationConfig",
    "SimulationResult",
    "simulate",
]
