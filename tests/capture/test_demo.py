"""`make demo` runs the same entry point; here a shorter run checks its summary."""
import re
import subprocess
import sys

import pytest

from timing import timeout


@pytest.mark.timeout(600)
def test_demo_summary(tmp_path):
    r = subprocess.run([sys.executable, "-m", "capture.demo", "--seconds", "6",
                        "--data-dir", str(tmp_path / "demo-data")],
                       capture_output=True, text=True, timeout=timeout(400))
    out = r.stdout
    assert r.returncode == 0, out[-3000:] + r.stderr[-3000:]
    assert "demo: OK" in out
    for venue in ("kraken", "polymarket", "kraken_futures", "kalshi"):
        m = re.search(rf"^  {venue}\s+(\d+) messages \+ (\d+) control records on disk", out, re.M)
        assert m and int(m.group(1)) > 0, f"{venue}: nothing captured\n{out}"
    assert "MISMATCH" not in out
    assert re.search(r"receive->disk p50 <= [\d.]+ (us|ms)", out)
    assert re.search(r"receive->ack p50 <= [\d.]+ (us|ms)", out)
