"""What a plain (non-editable) `pip install .` ships: the wheel holds every room of the package
(experiments/, fast/, course/ with the grader's plugin) and the CUDA sources as
avb_minimal/kernels, where backend.kernels_dir() finds them."""
import os
import subprocess
import sys
import zipfile

import pytest

from avb_minimal.backend import KERNEL_FILES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_the_wheel_ships_every_room_and_the_kernels(tmp_path):
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", ROOT, "--no-deps",
                        "-q", "-w", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("avb_minimal-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for f in KERNEL_FILES + ("device_math.cuh", "cuda_emulation.h"):
        assert f"avb_minimal/kernels/{f}" in names, f
    for m in ("experiments/table1.py", "fast/step.py", "fast/selfcheck.py", "course/grade.py", "course/plugin.py",
              "train.py", "backend.py", "__main__.py"):
        assert f"avb_minimal/{m}" in names, m
