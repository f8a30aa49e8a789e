"""Network model: exact message metering, link delays and compute times."""

from fedopt.network.compute_time import ComputeConfig, ComputeTimeModel
from fedopt.network.link import LinkModel, NetworkConfig
from fedopt.network.meter import HEADER_BYTES, Meter, MeterTotals, payload_bytes

__all__ = [
    "HEADER_BYTES",
    "ComputeConfig",
    "ComputeTimeModel",
    "LinkModel",
    "Meter",
    "MeterTotals",
    "NetworkConfig",
    "payload_bytes",
]
