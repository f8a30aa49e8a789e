"""Check the link model against an emulated network (see README.md here).

Two network namespaces joined by a veth pair, bandwidth shaped by ``tc tbf``, latency
added by a user-space delay relay; a gRPC receiver worker in one namespace, a sender
in the other, gossip-shaped payloads of four sizes. Writes ``results.json`` beside this
file and prints the README table. Needs root; exits with the reason when it cannot run.

    PYTHONPATH=. python experiments/grpc/link_check.py
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fedopt.transport.calibrate import measure_overhead
from fedopt.transport.config import GrpcConfig
from fedopt.transport.emulate import EmulationUnavailable, exists, link_check, probe

SIZES = [1, 256, 25_000, 250_000]  # float32 entries: 4 B, 1 KB, 100 KB, 1 MB rows
FLOOR = (10e9, 0.0)  # a 10 Gbit/s link without delay: the software's own time per message
LINKS = [(50e6, 0.020, SIZES), (10e6, 0.005, SIZES), (1e6, 0.005, SIZES[:3])]


def main() -> int:
    reason = probe()
    if reason is not None:
        print(f"skipped: {reason}")
        return 0
    header = measure_overhead(GrpcConfig())
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rate, lat, sizes in [(*FLOOR, SIZES), *LINKS]:
            try:
                r = link_check(rate, lat, sizes, 3, {"32": 32, "measured": header}, Path(tmp))
            except EmulationUnavailable as exc:
                print(f"skipped: {exc}")
                return 0
            assert not any(exists(ns) for ns in r["namespaces"])  # cleaned up
            results.append(r)
    floor = {row["floats"]: row["measured_ms"] for row in results[0]["rows"]}
    for r in results[1:]:
        for row in r["rows"]:  # the link's own share: measured minus the software floor
            net = row["measured_ms"] - floor[row["floats"]]
            row["floor_ms"] = floor[row["floats"]]
            for h in ("32", "measured"):
                row[f"net_error_{h}"] = round((row[f"model_{h}_ms"] - net) / net, 4)
    out = {"header_bytes_measured": header, "floor": results[0], "links": results[1:]}
    (Path(__file__).parent / "results.json").write_text(json.dumps(out, indent=1) + "\n")
    print(f"measured header: {header} B; software floor per size (ms): {floor}")
    print(
        "| link | payload | measured ms | floor ms | model 32 B ms | error | error net of "
        "floor | model measured ms | error | error net of floor |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results[1:]:
        link = f"{r['rate_bps'] / 1e6:g} Mbit/s, {1e3 * r['latency_s']:g} ms"
        for row in r["rows"]:
            print(
                f"| {link} | {row['payload_bytes']:,} B | {row['measured_ms']:.1f} | "
                f"{row['floor_ms']:.1f} | {row['model_32_ms']:.1f} | "
                f"{100 * row['error_32']:+.1f}% | {100 * row['net_error_32']:+.1f}% | "
                f"{row['model_measured_ms']:.1f} | {100 * row['error_measured']:+.1f}% | "
                f"{100 * row['net_error_measured']:+.1f}% |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
