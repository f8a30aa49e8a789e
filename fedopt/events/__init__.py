"""Continuous-time event schedules: Poisson clocks on nodes and edges."""

from fedopt.events.batching import disjoint_batches
from fedopt.events.stream import EventBlock, PoissonEventStream

__all__ = ["EventBlock", "PoissonEventStream", "disjoint_batches"]
