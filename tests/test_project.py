"""The project's own scripts: CI must parse and run the test suite; the GPU script must run."""
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_ci_script_parses_and_runs_make_test():
    script = ROOT / ".ci" / "run"
    check = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    commands = [line.strip() for line in script.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert commands[-1] == "make test"
    assert "set -euo pipefail" in commands


@pytest.mark.slow
def test_the_gpu_script_runs_every_check_on_the_cpu_in_its_dry_run():
    """benchmarks/gpu.sh is run where a GPU is lent; its dry run takes the same steps on the CPU,
    so a broken step shows here first."""
    proc = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--dry-run"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    table = proc.stdout[proc.stdout.rindex("| measure |"):]  # the final table (rows are also printed as they come)
    rows = [line for line in table.splitlines() if line.startswith("| ") and "steps/s" in line]
    assert len(rows) == 5 and not any("nan" in row for row in rows), proc.stdout
    assert "job 0: GPU -; job 1: GPU -; job 2: GPU -; job 3: GPU - (exit 0)" in proc.stdout
    assert not (ROOT / "benchmarks" / "results" / "gpu-dry-run.md").exists()
