"""benchmarks/gpu_check.py on a machine without CUDA: the CPU part runs, CUDA is reported absent."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only report")
def test_gpu_check_reports_cuda_absent_and_runs_the_cpu_part(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    threads = torch.get_num_threads()
    try:
        import gpu_check

        result = gpu_check.main(["--quick", "--skip-cpu-training",
                                 "--out", str(tmp_path / "gpu.json")])
    finally:
        torch.set_num_threads(threads)
        sys.modules.pop("gpu_check", None)
    written = json.loads((tmp_path / "gpu.json").read_text())
    assert written["cuda"]["available"] is False
    assert "CUDA is absent" in written["cuda"]["note"]
    assert written["grud_kernel_ms"]["cpu"] > 0
    assert "gpu_tests" not in written and "p1_cuda" not in written
    assert result["cuda"] == written["cuda"]
