"""The Ray engine: actors host shards of nodes; imported only when selected.

Modules: ``placement`` (which nodes each actor hosts), ``comm`` (messaging between
actors), ``mailbox`` (keyed payloads and the transport seam: Ray calls or gRPC streams,
:mod:`fedopt.transport`), ``actor`` (the worker actor), ``engine`` (driver side),
``cluster`` (start and join clusters with token authentication).
"""
