"""fedopt: a simulator for distributed, decentralized and federated optimization.

Describe an experiment in one YAML file and run it with ``fedopt run``; see README.
Importing fedopt never imports Ray.
"""

__version__ = "0.1.0"
