"""zactor against Ray 2.60 and multiprocessing.Pool, same cases, same run, same machine.

    python -m zactor.benchmarks.compare [--quick] [--peers PATH_TO_VENV]

Each implementation runs microbenchmark.py in its own fresh interpreter, one after another
(never at the same time: they would share the cores). Ray comes from the reference venv that
``../shared/tools/reference-venv`` prints (or ``--peers``); Ray is never a dependency of
zactor. Prints a table of the figures and of zactor's ratio to each peer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from zactor.benchmarks import microbenchmark

HERE = os.path.dirname(os.path.abspath(__file__))
CASES_FILE = os.path.join(HERE, "microbenchmark.py")
#: cases where smaller is better (the ratio is inverted so > 1 always means zactor is better)
LOWER_IS_BETTER = ("(s)", "(us)", "(ms)", "(ms/hop)", "(MB)")


def _run(python: str, impl: str, quick: bool, env=None) -> dict:
    cmd = [python, CASES_FILE, "--impl", impl, "--json"] + (["--quick"] if quick else [])
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, env=env)
    if proc.returncode != 0:
        print(f"{impl} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
        return {}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _find_peers(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    tool = os.path.join(os.path.dirname(HERE), "..", "..", "shared", "tools", "reference-venv")
    for candidate in (tool, os.path.join(os.getcwd(), "..", "shared", "tools",
                                         "reference-venv")):
        if os.path.exists(candidate):
            out = subprocess.run(["bash", candidate], capture_output=True, text=True,
                                 timeout=1800)
            if out.returncode == 0:
                return out.stdout.strip().splitlines()[-1]
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--peers", help="a venv with ray installed (default: reference-venv)")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)
    columns = {}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [os.path.dirname(os.path.dirname(HERE))] + env.get("PYTHONPATH", "").split(os.pathsep))
    columns["zactor"] = _run(sys.executable, "zactor", args.quick, env)
    if not args.skip_ray:
        peers = _find_peers(args.peers)
        if peers:
            ray_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
            ray_env["RAY_USAGE_STATS_ENABLED"] = "0"
            columns["ray"] = _run(os.path.join(peers, "bin", "python"), "ray", args.quick,
                                  ray_env)
        else:
            print("(no reference venv found: Ray column skipped)", file=sys.stderr)
    columns["pool"] = _run(sys.executable, "pool", args.quick)
    microbenchmark.print_table(columns)
    z = columns["zactor"]
    for peer in ("ray", "pool"):
        other = columns.get(peer) or {}
        ratios = {}
        for case, value in z.items():
            if case in other and other[case] and value:
                better_low = case.endswith(LOWER_IS_BETTER)
                ratios[case] = other[case] / value if better_low else value / other[case]
        if ratios:
            print(f"\nzactor vs {peer} (> 1: zactor better)")
            for case, r in ratios.items():
                print(f"  {case:38s} {r:8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
