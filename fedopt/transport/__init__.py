"""The gRPC data plane between workers (``engine.transport: grpc``).

Modules: ``config`` (the ``engine.grpc`` section), ``wire`` (payloads to frames and
back: a fixed binary header, raw tensor bytes in chunks), ``auth`` (the token in
metadata), ``server`` and ``client`` (one gRPC server per worker, one channel per
peer), ``meters`` (gRPC frame bytes and kernel socket bytes), ``calibrate``
(``network.header_bytes: measured``). Ray, or a small launcher, stays the control
plane: it starts the workers and tells them each other's addresses.
"""
