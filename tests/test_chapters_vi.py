"""The black-box VI chapters (09: 2-d toys, 10: Eight Schools) run end to end with --quick."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHAPTERS = {"09_vi_toys.py": ["09_vi_toys.png"],
            "10_eight_schools.py": ["10_eight_schools_fig3.png", "10_eight_schools_fig4.png"]}


@pytest.mark.parametrize("chapter", sorted(CHAPTERS))
def test_chapter_runs_quick_and_writes_its_figures(chapter, tmp_path):
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "chapters", chapter), "--quick",
                           "--out", str(tmp_path)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    for png in CHAPTERS[chapter]:
        path = tmp_path / png
        assert path.exists() and path.stat().st_size > 10_000, png
        with open(path, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
