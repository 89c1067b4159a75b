"""The progress line (avb_minimal.progress): quiet prints nothing; in a log (not a
terminal) a line as it starts, then one per tenth of the run with the stats it is given."""
import io

from avb_minimal.progress import Progress


def test_quiet_prints_nothing():
    s = io.StringIO()
    p = Progress(100, "run", quiet=True, stream=s)
    for i in range(1, 101):
        p.update(i, loss=1.0)
    assert s.getvalue() == ""


def test_a_log_gets_a_first_line_then_one_per_tenth():
    s = io.StringIO()
    p = Progress(1000, "avb seed 0", stream=s)
    for i in range(1, 1001):
        p.update(i, adv_loss=0.5 + i / 1e4)
    lines = s.getvalue().splitlines()
    assert len(lines) == 11
    assert lines[0].startswith("avb seed 0 1/1000")
    assert lines[1].startswith("avb seed 0 100/1000") and "adv_loss=0.51" in lines[1]
    assert lines[-1].startswith("avb seed 0 1000/1000") and "s left]" in lines[-1]
