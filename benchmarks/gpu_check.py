"""GPU check: one short command (< 5 minutes) for a lent CUDA machine.

    python benchmarks/gpu_check.py --write          # -> benchmarks/results/gpu.json
    python benchmarks/gpu_check.py --quick          # seconds: the CPU part only matters

Always (the CPU part): the GRU-D recurrence kernel (:func:`recurra.nn.grud_kernel.
fused_recurrence`, forward + backward) timed on the CPU, and a short P1 ETTh1 training of
ours stateless and stateful (``benchmarks/_t1s.py``) on the CPU.  With CUDA it also runs
the unit tests marked ``gpu`` (``pytest -m gpu``), the same P1 trainings on the GPU in fp32
and with AMP (bf16), with cuDNN on and off, reporting supervised positions/s, the best
validation MSE, the seconds to reach the NeuralForecast level recorded in
``results/throughput.json`` (``t1s.level_val_mse``) and the test MSE at the best validation
evaluation, plus the GRU-D kernel on the GPU.  Without CUDA the result says so
(``cuda: {"available": false, ...}``) and the GPU part is skipped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import PROJECT_ROOT, SHARED_DATA, setup_paths, write_result  # noqa: E402

setup_paths()

import torch  # noqa: E402

from recurra.nn.grud_kernel import fused_recurrence  # noqa: E402


def grud_kernel_ms(device: str, steps: int = 96, batch: int = 256, hidden: int = 64,
                   repeats: int = 3) -> float:
    """Milliseconds of one forward + backward of the fused GRU-D recurrence on ``device``."""
    generator = torch.Generator().manual_seed(0)

    def tensor(*shape):
        return torch.randn(*shape, generator=generator).to(device).requires_grad_()

    gates = tensor(steps, batch, 3 * hidden)
    gamma = torch.rand(steps, batch, hidden, generator=generator).to(device)
    hidden0, weight, bias = tensor(batch, hidden), tensor(3 * hidden, hidden), tensor(3 * hidden)
    timings = []
    for _ in range(repeats + 1):  # the first call warms up
        if device == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        outputs, _ = fused_recurrence(gates, gamma, hidden0, weight, bias)
        outputs.sum().backward()
        if device == "cuda":
            torch.cuda.synchronize()
        timings.append(time.perf_counter() - started)
    return 1e3 * min(timings[1:])


def cuda_facts() -> dict:
    if not torch.cuda.is_available():
        return {"available": False, "note": "CUDA is absent on this machine: only the CPU part "
                                            "ran; run this script on a GPU machine"}
    return {"available": True, "name": torch.cuda.get_device_name(0),
            "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
            "bf16_supported": torch.cuda.is_bf16_supported()}


def gpu_tests() -> dict:
    """``pytest -m gpu`` in a subprocess: return code and the summary line."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-m", "gpu", "tests"], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    return {"returncode": done.returncode, "summary": lines[-1] if lines else "",
            "seconds": time.perf_counter() - started}


def p1_trainings(args: argparse.Namespace, device: str, variants: list[dict]) -> dict:
    """Short P1 trainings (``_t1s.ours``) of ours stateless and stateful per variant."""
    from _t1s import TEST, TRAIN, _Evaluator, ours, seconds_to_level, zscored
    from throughput import read_ett, windows_frame

    values, channels = read_ett(args.csv)
    z = zscored(values)
    def frame_of(block):
        return windows_frame(block[None], channels, prefix="ETTh1_")
    evaluator = _Evaluator(frame_of(z[:TEST[1]]), len(channels))
    train = frame_of(z[TRAIN[0]:TRAIN[1]])
    level = _recorded_level()
    results = {"level_val_mse": level, "level_from": "results/throughput.json t1s"}
    for variant in variants:
        torch.backends.cudnn.enabled = variant.get("cudnn", True)
        settings = argparse.Namespace(**{**vars(args), "t1s_device": device,
                                         "t1s_amp": variant.get("amp", "none")})
        for stateful in (False, True):
            run = ours(stateful, train, evaluator, args.budget, args.eval_every, settings)
            name = f"{variant['name']}_{'stateful' if stateful else 'stateless'}"
            results[name] = {key: run[key] for key in (
                "best_val_mse", "best_train_s", "train_s", "test_mse_at_best_val",
                "supervised_positions_per_s")}
            results[name]["seconds_to_level"] = (seconds_to_level(run["curve"], level)
                                                 if level else None)
    torch.backends.cudnn.enabled = True
    return results


def _recorded_level() -> float | None:
    path = PROJECT_ROOT / "benchmarks" / "results" / "throughput.json"
    if not path.exists():
        return None
    return json.loads(path.read_text()).get("t1s", {}).get("level_val_mse")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds (a smoke run)")
    parser.add_argument("--csv", type=Path, default=SHARED_DATA / "ett" / "ETTh1.csv")
    parser.add_argument("--budget", type=float, default=30.0,
                        help="training seconds per P1 training")
    parser.add_argument("--eval-every", type=float, default=3.0)
    parser.add_argument("--skip-cpu-training", action="store_true",
                        help="only the GRU-D kernel on the CPU")
    parser.add_argument("--write", action="store_true", help="write results/gpu.json")
    parser.add_argument("--out", type=Path, help="write the JSON here instead")
    args = parser.parse_args(argv)
    from _t1s import DEFAULTS

    vars(args).update(DEFAULTS)
    if args.quick:
        args.budget, args.eval_every = 1.0, 1.0
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    result: dict = {"quick": args.quick, "cuda": cuda_facts(),
                    "grud_kernel_ms": {"cpu": grud_kernel_ms("cpu", repeats=1 if args.quick
                                                             else 3)}}
    if not args.skip_cpu_training and args.csv.exists():
        result["p1_cpu"] = p1_trainings(args, "cpu", [{"name": "cpu_fp32"}])
    if result["cuda"]["available"]:
        result["gpu_tests"] = gpu_tests()
        result["grud_kernel_ms"]["cuda"] = grud_kernel_ms("cuda")
        result["grud_kernel_ms"]["cpu_over_cuda"] = (result["grud_kernel_ms"]["cpu"]
                                                     / result["grud_kernel_ms"]["cuda"])
        result["p1_cuda"] = p1_trainings(args, "cuda", [
            {"name": "fp32"}, {"name": "bf16", "amp": "bf16"},
            {"name": "fp32_no_cudnn", "cudnn": False}])
    result["wall_s"] = time.perf_counter() - started
    if args.write or args.out is not None:
        import _common

        name = "gpu"
        if args.out is not None:
            _common.RESULTS_DIR, name = args.out.resolve().parent, args.out.stem
        write_result(name, result)
    else:
        print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()
