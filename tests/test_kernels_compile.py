"""Every kernels/*.cu compiles to PTX with nvcc for sm_70, sm_80 and sm_90 (no GPU needed).

Skips, with the reason, where nvcc is absent or where the installed nvcc no longer
targets an architecture (CUDA 13 dropped sm_70: there sm_75, the oldest it keeps,
is compiled as well, so the pre-Ampere path is still checked).
"""
import functools
import re
import shutil
import subprocess

import pytest

from avb_minimal.backend import KERNEL_FILES, kernels_dir

ARCHS = ["sm_70", "sm_75", "sm_80", "sm_90"]
NVCC = shutil.which("nvcc")


@functools.lru_cache(maxsize=None)
def _nvcc_archs():
    out = subprocess.run([NVCC, "--list-gpu-arch"], capture_output=True, text=True).stdout
    return set(re.findall(r"compute_(\d+)", out))


@pytest.mark.skipif(NVCC is None, reason="nvcc is not on the PATH: the CUDA sources cannot be compiled here")
@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", KERNEL_FILES)
def test_cu_compiles_to_ptx(source, arch, tmp_path):
    if _nvcc_archs() and arch.split("_")[1] not in _nvcc_archs():   # (an nvcc without --list-gpu-arch: just try)
        known = ", ".join(f"sm_{a}" for a in sorted(_nvcc_archs(), key=int))
        pytest.skip(f"this nvcc no longer targets {arch} (it targets {known})")
    ptx = tmp_path / (source + ".ptx")
    res = subprocess.run([NVCC, "--ptx", f"-arch={arch}", "-Werror", "all-warnings",
                          f"{kernels_dir()}/{source}", "-o", str(ptx)], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    text = ptx.read_text()
    assert f".target {arch}" in text
    with open(f"{kernels_dir()}/{source}", encoding="utf-8") as fh:
        names = re.findall(r"__global__ void (\w+)##SFX", fh.read())    # e.g. 'ip_rows_'
    assert names, f"no entry points found in {source}"
    for n in names:                          # every entry point in float and double
        for sfx in ("f32", "f64"):
            assert f".entry {n}{sfx}(" in text, f"{n}{sfx} missing from the PTX of {source}"
    # float kernels stay float: no double-precision instruction in any _f32 entry point
    f32_bodies = re.findall(r"\.entry (\w+_f32)\((.*?)\n}\n", text, re.S)
    assert len(f32_bodies) == len(names)
    for name, body in f32_bodies:
        assert not re.search(r"\.f64\b", body), f"{name} computes in double"
