"""Experiment configuration: schema and loading."""

from fedopt.config.load import apply_overrides, load_experiment, read_yaml, validate
from fedopt.config.schema import ExperimentConfig

__all__ = ["ExperimentConfig", "apply_overrides", "load_experiment", "read_yaml", "validate"]
