"""fedopt: a simulator for distributed, decentralized and federated optimization.

Describe an experiment in one YAML file and run it with ``fedopt run``; see README.
Importing fedopt never imports Ray.

Importing fedopt sets ``MKL_CBWR=AUTO,STRICT`` unless the variable is already set.
MKL's default CPU kernels round a product differently depending on where its operands
start in memory, so one node's row of a batched matrix product could change with the
node's position in its worker's batch (seen with ``bmm`` on AMD EPYC/AVX2: a
``[257, 8] @ [8, 10]`` slice differs at odd batch positions). Strict conditional
numerical reproducibility removes that dependence, which fedopt's promise of equal bits
for every placement of nodes needs. MKL reads the variable at its first call, so the
setting holds as long as no MKL routine ran before fedopt was imported; Ray workers
import fedopt before computing anything.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")

__version__ = "0.1.0"
