"""One command that checks the device path, for whoever has a GPU:

    python -m avb_minimal selfcheck --device gpu --json selfcheck.json

It runs, in a few minutes: the device tests (tests/test_device.py, `pytest -m device`, from
the checkout), `bench ops`, `bench step` on the device at three sizes, and a quick Table 1
trained on the device, and returns one JSON-able dict that names the device.  With
`--device cpu` the same runs on the host (the tests on the strict stand-in), which is how
the command itself is tested on machines without a GPU.
"""
import os
import platform
import re
import subprocess
import sys
import time

import numpy as np

import avb_minimal

from .. import models as M
from ..backend import device_module
from ..experiments.table1 import table1
from .bench_ops import bench_ops, device_name
from .bench_step import bench_step


def _tests_dir():
    """tests/ of the checkout: the working directory's, else beside the package."""
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for root in (os.getcwd(), here):
        if os.path.isfile(os.path.join(root, "tests", "test_device.py")):
            return os.path.join(root, "tests")
    return None


def run_device_tests(timeout=240):
    """pytest -m device on the checkout's tests; -> dict with the exit code, counts and tail."""
    tests = _tests_dir()
    if tests is None:
        return {"exit_code": None, "summary": "tests/test_device.py not found: run selfcheck from a checkout"}
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "device",
                           os.path.join(tests, "test_device.py")],
                          capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(tests))
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    summary = next((ln for ln in reversed(lines) if re.search(r"\d+ (passed|failed|error)", ln)), lines[-1:])
    return {"exit_code": proc.returncode, "summary": summary, "seconds": time.perf_counter() - t,
            "tail": "\n".join(lines[-40:]) if proc.returncode else ""}


def parse_sizes(text):
    """'512x512,4096x1024' -> [(512, 512), (4096, 1024)]; a clear error naming --sizes."""
    sizes = []
    for item in text.split(","):
        try:
            b, w = (int(v) for v in item.lower().split("x"))
        except ValueError:
            raise ValueError(f"--sizes takes BATCHxWIDTH items separated by commas, got {item!r}") from None
        if b < 1 or w < 1:
            raise ValueError(f"--sizes: batch and width must be positive, got {item!r}")
        sizes.append((b, w))
    return sizes


def selfcheck(device="gpu", sizes=((512, 512), (4096, 1024), (16384, 1024)), tests=True):
    """The device tests, bench ops, bench step at `sizes` and a quick Table 1, on `device`."""
    xp = device_module(device)
    t0 = time.perf_counter()
    out = {"device": device, "device_name": device_name(xp), "avb_minimal": avb_minimal.__version__,
           "numpy": np.__version__, "cupy": getattr(xp, "__version__", None) if xp is not np else None,
           "python": platform.python_version()}
    out["tests"] = run_device_tests() if tests else None
    small = xp is np
    out["bench_ops"] = bench_ops(batch_sizes=(64, 512) if small else (64, 4096),
                                 widths=(64,) if small else (512, 1024), min_time=0.02 if small else 0.05)
    out["bench_step"] = [bench_step(batch=b, width=w, steps=5 if small else 20, warmup=2 if small else 5,
                                    device=device) for b, w in sizes]
    t = time.perf_counter()
    res = table1(seeds=(0,), quick=True, kinds=M.KINDS, device=device)
    out["table1_quick"] = {"seconds": time.perf_counter() - t,
                           **{k: {m: res["models"][k].get(m) for m in ("log_likelihood", "elbo",
                                                                        "reconstruction_error")}
                              for k in M.KINDS}}
    out["seconds"] = time.perf_counter() - t0
    return out


def format_selfcheck(r):
    lines = [f"device: {r['device']} ({r['device_name']}), avb_minimal {r['avb_minimal']}, numpy {r['numpy']}"
             + (f", cupy {r['cupy']}" if r["cupy"] else "")]
    if r["tests"] is not None:
        lines.append(f"device tests: {r['tests']['summary']}")
        if r["tests"].get("tail"):
            lines.append(r["tests"]["tail"])
    for s in r["bench_step"]:
        lines.append(f"bench step {s['batch']} x {s['width']} ({s['step']}): {s['ms_per_step']:.2f} ms per step, "
                     f"{s['fraction_of_peak']:.1%} of the measured matmul rate ({s['sgemm_gflops']:.0f} GFLOP/s)")
    t1 = r["table1_quick"]
    lines.append(f"quick Table 1 on {r['device']} ({t1['seconds']:.0f} s): "
                 + ", ".join(f"{k} log p(x) = {t1[k]['log_likelihood']:.3f}" for k in M.KINDS))
    lines.append(f"total: {r['seconds']:.0f} s")
    return "\n".join(lines)
