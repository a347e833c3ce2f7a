"""T2: GRU-D training seconds per epoch on the P4 data at hidden 64, ours vs PyPOTS side by side.

Both models train on the same arrays: every record of ``--records`` binned into 48 hourly
steps (``grud_physionet.load_cohort``), z-scored with the statistics of all records, hidden
size 64, batch size 64, Adam lr 1e-3, binary outcome, no validation set.  Ours is
:class:`recurra.nn.grud.GRUDClassifier` (fused time loop) trained by a plain loop over
pre-built batch tensors; PyPOTS' is ``pypots.classification.GRUD`` trained by its own
``fit`` (its dataset prepares deltas, masks and last observations once per fit).

Seconds per epoch:
- ours: wall time of one epoch (shuffled batches, forward + backward + Adam step) after two
  warm-up batches;
- PyPOTS: ``(fit with 1 + E epochs - fit with 1 epoch) / E`` so that its one-off dataset
  preparation and model construction cancel out.
The two are measured alternately ``--repeats`` times and the medians compared (the CPU is
shared, so a single pair is noisy).

Usage::

    python benchmarks/_t2_grud.py --records ../shared/data/physionet2012/set-a.csv.gz \
        --outcomes ../shared/data/physionet2012/Outcomes-a.txt [--quick]

``run_t2(records, outcomes, quick)`` returns the result dict (``benchmarks/throughput.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import _common  # noqa: E402
import grud_physionet as p4  # noqa: E402
from _common import SHARED_DATA, write_result  # noqa: E402

N_HOURS, Cohort, load_cohort, model_inputs = (p4.N_HOURS, p4.Cohort, p4.load_cohort,
                                              p4.model_inputs)
batches, build_model, logits_of, _subset = p4.batches, p4.build_model, p4.logits_of, p4._subset

HIDDEN = 64
BATCH_SIZE = 64


def cohort_epoch_seconds(cohort: Cohort, hidden: int = HIDDEN, device: str = "cpu",
                         batch_size: int = BATCH_SIZE, **model_options) -> tuple[float, float]:
    """(wall, process CPU) seconds for one GRU-D training epoch over every record of
    ``cohort`` (after two warm-up batches); ``model_options`` go to
    ``grud_physionet.build_model``."""
    tensors = {k: v.to(device) for k, v in
               model_inputs(cohort, np.arange(len(cohort.labels))).items()}
    torch.manual_seed(0)
    model = build_model("grud", tensors["x"].shape[-1], tensors["static"].shape[-1],
                        hidden, **model_options).to(device)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    all_batches = batches(tensors, np.arange(len(cohort.labels)), batch_size,
                          np.random.default_rng(0))

    def run(batch_list):
        for batch in batch_list:
            optimizer.zero_grad(set_to_none=True)
            loss_fn(logits_of("grud", model, batch), batch["y"]).backward()
            optimizer.step()

    run(all_batches[:2])
    _synchronize(device)
    started, cpu = time.perf_counter(), time.process_time()
    run(all_batches)
    _synchronize(device)
    return time.perf_counter() - started, time.process_time() - cpu


def pypots_fit_seconds(cohort: Cohort, epochs: int, hidden: int = HIDDEN,
                       device: str = "cpu", batch_size: int = BATCH_SIZE) -> tuple[float, float]:
    """(wall, process CPU) seconds of ``pypots.classification.GRUD(...).fit`` for
    ``epochs`` epochs."""
    with contextlib.redirect_stdout(sys.stderr):  # PyPOTS prints a banner on import
        from pypots.classification import GRUD as PyPOTSGRUD
    tensors = model_inputs(cohort, np.arange(len(cohort.labels)))
    values = tensors["x"].numpy().copy()
    values[~cohort.observed] = np.nan
    train_set = {"X": values, "y": cohort.labels.astype(int)}
    torch.manual_seed(0)
    model = PyPOTSGRUD(n_steps=N_HOURS, n_features=values.shape[-1], n_classes=2,
                       rnn_hidden_size=hidden, batch_size=batch_size, epochs=epochs,
                       device=device, verbose=False, model_saving_strategy=None)
    started, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(sys.stderr):
        model.fit(train_set)
    return time.perf_counter() - started, time.process_time() - cpu


def _synchronize(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def run_t2(records: Path, outcomes: Path, quick: bool = False, *, device: str = "cpu",
           repeats: int = 3, extra_epochs: int = 2) -> dict:
    """Measure T2 (see the module docstring); ``quick``: 640 records, one repeat."""
    cohort = load_cohort(records, outcomes)
    if quick:
        cohort = _subset(cohort, np.arange(min(640, len(cohort.labels))))
        repeats = 1
    ours, ours_regularised, theirs, theirs_one = [], [], [], []
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import pypots
        pypots_version = pypots.__version__
    except ImportError as error:
        pypots_version = f"not installed ({error}); pip install -c constraints.txt '.[bench]'"
    for _ in range(repeats):
        ours.append(cohort_epoch_seconds(cohort, device=device))
        ours_regularised.append(cohort_epoch_seconds(cohort, device=device, dropout=0.5,
                                                     input_dropout=0.2,
                                                     recurrent_dropout=0.5))
        if not pypots_version.startswith("not installed"):
            one = pypots_fit_seconds(cohort, 1, device=device)
            more = pypots_fit_seconds(cohort, 1 + extra_epochs, device=device)
            theirs_one.append(one)
            theirs.append(tuple((b - a) / extra_epochs for a, b in zip(one, more, strict=True)))
        print(f"T2 repeat (wall, cpu s/epoch): ours {ours[-1]}, ours+dropouts "
              f"{ours_regularised[-1]}, pypots {theirs[-1] if theirs else None}",
              file=sys.stderr, flush=True)
    result = {"n_records": int(len(cohort.labels)), "hidden": HIDDEN,
              "batch_size": BATCH_SIZE, "n_steps": N_HOURS,
              "n_variables": len(cohort.variables), "repeats": repeats, "pypots": pypots_version}
    for kind, column in (("wall", 0), ("cpu", 1)):
        mine = np.median([r[column] for r in ours])
        result[f"recurra_grud_{kind}_seconds_per_epoch"] = float(mine)
        result[f"recurra_grud_p4_regularised_{kind}_seconds_per_epoch"] = float(
            np.median([r[column] for r in ours_regularised]))
        other = np.median([r[column] for r in theirs]) if theirs else None
        result[f"pypots_grud_{kind}_seconds_per_epoch"] = (None if other is None
                                                            else float(other))
        result[f"speedup_vs_pypots_{kind}"] = None if other is None else float(other / mine)
    result.update({
        "recurra_grud_all": [[round(v, 4) for v in r] for r in ours],
        "pypots_grud_all": [[round(v, 4) for v in r] for r in theirs],
        "pypots_grud_fit_1_epoch_s": [[round(v, 4) for v in r] for r in theirs_one],
        "target": "recurra >= 3x faster per epoch than pypots.classification.GRUD",
        "method": "medians of alternating repeats; wall = elapsed, cpu = process CPU time; "
                  "pypots per "
                  "epoch = (fit 1+E epochs - fit 1 epoch) / E; same arrays, hidden 64, "
                  "batch 64, Adam lr 1e-3, 1 torch thread",
        "quick": quick,
    })
    result["train_s"] = float(sum(r[0] for r in ours + ours_regularised))
    result["predict_s"] = 0.0
    result["epochs"] = 1
    return result


def main(argv: list[str] | None = None) -> dict:
    folder = SHARED_DATA / "physionet2012"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", default=str(folder / "set-a.csv.gz"))
    parser.add_argument("--outcomes", default=str(folder / "Outcomes-a.txt"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (both models)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="640 records, one repeat")
    _common.add_write_flag(parser)
    args = parser.parse_args(argv)
    _common.keep_out_of_results(args.write)
    torch.set_num_threads(args.threads)
    result = run_t2(Path(args.records), Path(args.outcomes), args.quick, device=args.device,
                    repeats=args.repeats)
    write_result("t2_grud_quick" if args.quick else "t2_grud", result, device=args.device,
                 extra_versions=("pypots",))
    return result


if __name__ == "__main__":
    main()
