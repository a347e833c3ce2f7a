"""GRU-D invariants: masks, equivalence with nn.GRU, decays, chunking, gradients, shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recurra.data.schema import RecurraError
from recurra.nn.grud import GRUD, GRUDClassifier, GRUDState

LOOPS = ["fused", "python"]


def _inputs(batch=3, steps=7, features=4, share=0.4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, steps, features, generator=generator, dtype=torch.float64)
    observed = torch.rand(batch, steps, features, generator=generator) > share
    delta = torch.rand(batch, steps, features, generator=generator, dtype=torch.float64) * 3
    return x, observed, delta


def _model(features=4, hidden=5, seed=0, **options):
    torch.manual_seed(seed)
    model = GRUD(features, hidden, **options).double()
    model.set_empirical_mean(torch.linspace(-1, 1, features))
    return model


@pytest.mark.parametrize("loop", LOOPS)
def test_output_ignores_values_at_unobserved_positions(loop):
    model = _model(loop=loop)
    x, observed, delta = _inputs()
    noisy = torch.where(observed, x, torch.full_like(x, 1e6))
    with_nan = torch.where(observed, x, torch.full_like(x, float("nan")))
    out_a, state_a = model(x, observed, delta)
    out_b, state_b = model(noisy, observed, delta)
    out_c, _ = model(with_nan, observed, delta)
    torch.testing.assert_close(out_a, out_b)
    torch.testing.assert_close(out_a, out_c)
    torch.testing.assert_close(state_a.x_last, state_b.x_last)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_all_observed_without_decays_equals_nn_gru(num_layers):
    model = _model(num_layers=num_layers, input_decay=False, hidden_decay=False, loop="python")
    with torch.no_grad():
        model.weight_mh_l0.zero_()
    reference = torch.nn.GRU(4, 5, num_layers, batch_first=True).double()
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(reference, f"{name}_l0").copy_(getattr(model, f"{name}_l0"))
        if num_layers == 2:
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(reference, f"{name}_l1").copy_(getattr(model.upper, f"{name}_l0"))
    x, _, delta = _inputs()
    observed = torch.ones_like(x, dtype=torch.bool)
    out, state = model(x, observed, delta)
    expected, expected_hidden = reference(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(state.hidden, expected_hidden)


def test_long_gap_drives_imputed_input_to_mean():
    model = _model(features=2)
    with torch.no_grad():
        model.input_decay_weight.fill_(1.0)
    x = torch.tensor([[[5.0, -3.0]]], dtype=torch.float64).expand(1, 3, 2).clone()
    observed = torch.tensor([[[True, True], [False, False], [False, False]]])
    delta = torch.tensor([[[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]]], dtype=torch.float64)
    x_last = model._last_observed(x, observed, model.initial(1, dtype=torch.float64))
    x_hat = model._impute(x, observed.double(), delta, x_last)
    torch.testing.assert_close(x_hat[0, 0], torch.tensor([5.0, -3.0], dtype=torch.float64))
    gamma = torch.exp(torch.tensor(-1.0, dtype=torch.float64))
    expected_1 = gamma * torch.tensor([5.0, -3.0]).double() + (1 - gamma) * model.x_mean
    torch.testing.assert_close(x_hat[0, 1], expected_1)
    torch.testing.assert_close(x_hat[0, 2], model.x_mean, atol=1e-12, rtol=0)


def test_before_any_observation_the_mean_is_used():
    model = _model(features=2, input_decay=False)
    x, delta = torch.zeros(1, 2, 2, dtype=torch.float64), torch.zeros(1, 2, 2, dtype=torch.float64)
    observed = torch.zeros(1, 2, 2, dtype=torch.bool)
    x_last = model._last_observed(x, observed, model.initial(1, dtype=torch.float64))
    torch.testing.assert_close(x_last[0], model.x_mean.expand(2, 2))
    _, state = model(x, observed, delta)
    assert not state.seen.any()
    torch.testing.assert_close(state.x_last[0], model.x_mean)


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("num_layers", [1, 2])
def test_chunked_with_carried_state_equals_one_pass(loop, num_layers):
    model = _model(num_layers=num_layers, learn_initial_state=True, loop=loop).eval()
    x, observed, delta = _inputs(steps=11, share=0.6)
    whole, whole_state = model(x, observed, delta)
    state, parts = None, []
    for start, stop in ((0, 4), (4, 5), (5, 11)):
        out, state = model(x[:, start:stop], observed[:, start:stop], delta[:, start:stop], state)
        parts.append(out)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)
    for carried, single in zip(state, whole_state, strict=True):
        torch.testing.assert_close(carried, single)


@pytest.mark.parametrize("loop", LOOPS)
def test_gradients_reach_every_parameter(loop):
    model = _model(num_layers=2, learn_initial_state=True, loop=loop)
    x, observed, delta = _inputs(share=0.5)
    out, _ = model(x, observed, delta)
    out.pow(2).mean().backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def test_loops_agree_in_values_and_gradients():
    x, observed, delta = _inputs()
    results = {}
    for loop in LOOPS:
        model = _model(num_layers=2, loop=loop)
        out, state = model(x, observed, delta)
        (out.sin().sum() + state.hidden.sum()).backward()
        results[loop] = (out.detach(), {n: p.grad for n, p in model.named_parameters()})
    for loop in LOOPS[1:]:
        torch.testing.assert_close(results[loop][0], results["fused"][0])
        for name, grad in results["fused"][1].items():
            torch.testing.assert_close(results[loop][1][name], grad, msg=name)


@pytest.mark.parametrize("decay", [True, False])
def test_fused_backward_passes_gradcheck(decay):
    from recurra.nn.grud import _fused_recurrence

    generator = torch.Generator().manual_seed(1)
    steps, batch, size = 4, 2, 3

    def tensor(*shape, low=-1.0, high=1.0):
        values = torch.rand(*shape, generator=generator, dtype=torch.float64)
        return (values * (high - low) + low).requires_grad_(True)

    gamma = tensor(steps, batch, size, low=0.1, high=0.95) if decay else None
    inputs = (tensor(steps, batch, 3 * size), gamma, tensor(batch, size),
              tensor(3 * size, size), tensor(3 * size))
    assert torch.autograd.gradcheck(_fused_recurrence, inputs)


@pytest.mark.parametrize("loop", LOOPS)
def test_runs_under_bf16_autocast(loop):
    torch.manual_seed(0)
    model = GRUD(4, 5, num_layers=2, loop=loop)
    x, observed, delta = (t.float() if t.is_floating_point() else t for t in _inputs())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = model(x, observed, delta)
        out.float().pow(2).mean().backward()
    assert torch.isfinite(model.weight_hh_l0.grad).all()
    assert state.hidden.shape == (2, 3, 5)


def test_shapes_and_state():
    model = _model(num_layers=3, hidden=6)
    x, observed, delta = _inputs(batch=2, steps=5)
    out, state = model(x, observed, delta)
    assert out.shape == (2, 5, 6) and out.dtype == torch.float64
    assert isinstance(state, GRUDState)
    assert state.hidden.shape == (3, 2, 6)
    assert state.x_last.shape == (2, 4) and state.seen.dtype == torch.bool
    torch.testing.assert_close(out[:, -1], state.hidden[-1])


def test_bad_shapes_raise_clear_errors():
    model = _model()
    x, observed, delta = _inputs()
    with pytest.raises(RecurraError, match=r"`x` must be \(batch, time, features\)"):
        model(x[0], observed[0], delta[0])
    with pytest.raises(RecurraError, match=r"expected input_size \(4\)"):
        model(x[..., :3], observed[..., :3], delta[..., :3])
    with pytest.raises(RecurraError, match="`observed` shape"):
        model(x, observed[:, :2], delta)
    with pytest.raises(RecurraError, match="`delta` shape"):
        model(x, observed, delta[:2])
    _, state = model(x, observed, delta)
    with pytest.raises(RecurraError, match="state.hidden"):
        model(x[:2], observed[:2], delta[:2], state)
    with pytest.raises(RecurraError, match="must be one of"):
        GRUD(4, 5, loop="fast")
    with pytest.raises(RecurraError, match=r"`hidden_size` \(0\)"):
        GRUD(4, 0)
    with pytest.raises(RecurraError, match="expected input_size"):
        model.set_empirical_mean(torch.zeros(3))


def test_classifier_uses_static_inputs():
    torch.manual_seed(0)
    model = GRUDClassifier(4, 5, static_size=2).double()
    x, observed, delta = _inputs()
    static = torch.randn(3, 2, dtype=torch.float64)
    logits = model(x, observed, delta, static)
    assert logits.shape == (3, 1)
    assert not torch.allclose(logits, model(x, observed, delta, static + 1))
    with pytest.raises(RecurraError, match="`static` shape None"):
        model(x, observed, delta)


def test_physionet_binning_keeps_last_value_per_hour_and_deltas_in_hours(tmp_path):
    """The P4 benchmark's parser (benchmarks/grud_physionet.py) on a two-record file."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import grud_physionet

    records = tmp_path / "set.csv"
    records.write_text(
        "RecordID,Time,Parameter,Value\n"
        "1,00:00,RecordID,1\n1,00:00,Age,70\n1,00:00,Gender,1\n1,00:00,Height,-1\n"
        "1,00:10,HR,80\n1,00:50,HR,90\n1,03:00,HR,-1\n1,05:30,HR,100\n1,48:00,Temp,37\n"
        "2,00:00,RecordID,2\n2,00:00,Age,50\n2,00:00,Gender,0\n2,00:00,Height,170\n"
        "2,01:00,Temp,36\n")
    outcomes = tmp_path / "outcomes.txt"
    outcomes.write_text("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"
                        "1,1,1,5,-1,1\n2,1,1,5,-1,0\n")
    cohort = grud_physionet.load_cohort(records, outcomes)
    assert cohort.variables == ("HR", "Temp")
    assert cohort.values.shape == (2, 48, 2)
    assert cohort.labels.tolist() == [1.0, 0.0]
    hr = cohort.values[0, :, 0]
    assert hr[0] == 90.0 and hr[5] == 100.0          # last value of the hour; -1 = missing
    assert cohort.observed[0, :, 0].sum() == 2
    assert cohort.values[0, 47, 1] == 37.0           # 48:00 falls in the last bin
    assert cohort.delta[0, 5, 0] == 5.0 and cohort.delta[0, 6, 0] == 1.0
    assert cohort.static[:, 0].tolist() == [70.0, 50.0]
    assert cohort.static[:, 4].tolist() == [1.0, 0.0]  # height missing flag


def _benchmark_module():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    import grud_physionet

    return grud_physionet


def test_physionet_robust_transform_uses_training_records_only():
    """Clipping bounds and the log decision come from the training rows; NaN stays NaN."""
    grud_physionet = _benchmark_module()
    rng = np.random.default_rng(0)
    values = np.full((40, 4, 2), np.nan)
    values[:, :, 0] = rng.normal(10.0, 1.0, (40, 4))            # symmetric: not logged
    values[:, :, 1] = rng.lognormal(0.0, 1.5, (40, 4))          # skewed, >= 0: logged
    values[0, 0, 1] = np.nan
    values[-1, 0, 0] = 1e6                                      # a test-row unit error
    train = np.arange(30)
    out, logged = grud_physionet.robust_transform(values, train)
    assert logged == ["1"]
    high = np.nanpercentile(values[train, :, 0], 99.5)
    assert out[-1, 0, 0] == pytest.approx(high)                 # clipped to the train bound
    assert np.isnan(out[0, 0, 1])
    bound = np.nanpercentile(values[train, :, 1], 99.5)
    assert np.nanmax(out[..., 1]) == pytest.approx(np.log1p(bound))
    same, _ = grud_physionet.robust_transform(np.where(np.arange(40)[:, None, None] >= 30,
                                                       0.0, values), train)
    assert np.allclose(same[train], out[train], equal_nan=True)  # test rows change nothing


def test_physionet_static_inputs_include_admission_weight(tmp_path):
    grud_physionet = _benchmark_module()
    records = tmp_path / "set.csv"
    records.write_text(
        "RecordID,Time,Parameter,Value\n"
        "1,00:00,RecordID,1\n1,00:00,Age,70\n1,00:00,Gender,1\n1,00:00,Height,-1\n"
        "1,00:00,Weight,80\n1,02:00,Weight,82\n"
        "2,00:00,RecordID,2\n2,00:00,Age,50\n2,00:00,Gender,0\n2,00:00,Height,170\n"
        "2,00:00,Weight,-1\n2,01:00,Weight,60\n")
    outcomes = tmp_path / "outcomes.txt"
    outcomes.write_text("RecordID,SAPS-I,SOFA,Length_of_stay,Survival,In-hospital_death\n"
                        "1,1,1,5,-1,1\n2,1,1,5,-1,0\n")
    cohort = grud_physionet.load_cohort(records, outcomes)
    assert cohort.static.shape == (2, 7)
    assert cohort.static[0, 5] == 80.0 and cohort.static[0, 6] == 0.0
    assert np.isnan(cohort.static[1, 5]) and cohort.static[1, 6] == 1.0  # -1 = missing


def test_fused_backward_with_recurrent_dropout_passes_gradcheck():
    from recurra.nn.grud import _fused_recurrence

    generator = torch.Generator().manual_seed(2)
    steps, batch, size = 4, 2, 3

    def tensor(*shape, low=-1.0, high=1.0):
        values = torch.rand(*shape, generator=generator, dtype=torch.float64)
        return (values * (high - low) + low).requires_grad_(True)

    drop = torch.tensor([[2.0, 0.0, 2.0], [0.0, 2.0, 2.0]], dtype=torch.float64)
    inputs = (tensor(steps, batch, 3 * size), tensor(steps, batch, size, low=0.1, high=0.95),
              tensor(batch, size), tensor(3 * size, size), tensor(3 * size), drop)
    assert torch.autograd.gradcheck(_fused_recurrence, inputs)


def test_recurrent_and_input_dropout_same_in_every_loop_and_off_in_eval():
    x, observed, delta = _inputs()
    results = {}
    for loop in ("fused", "python"):
        model = _model(loop=loop, input_dropout=0.3, recurrent_dropout=0.5)
        torch.manual_seed(3)
        out, _ = model(x, observed, delta)
        out.pow(2).sum().backward()
        results[loop] = (out.detach(), model.weight_hh_l0.grad.clone())
    torch.testing.assert_close(results["python"][0], results["fused"][0])
    torch.testing.assert_close(results["python"][1], results["fused"][1])
    plain = _model()
    model = _model(input_dropout=0.3, recurrent_dropout=0.5)
    assert not torch.allclose(results["fused"][0], plain(x, observed, delta)[0].detach())
    model.eval(), plain.eval()
    torch.testing.assert_close(model(x, observed, delta)[0], plain(x, observed, delta)[0])
    with pytest.raises(RecurraError, match="`recurrent_dropout` \\(1.0\\) must be in"):
        GRUD(3, 4, recurrent_dropout=1.0)


@pytest.mark.parametrize("decay", [True, False])
def test_fused_backward_with_dropout_and_optional_decay_passes_gradcheck(decay):
    """The kernel's four cases of the carried-gradient factor: decay x dropout on/off."""
    from recurra.nn.grud_kernel import fused_recurrence

    generator = torch.Generator().manual_seed(4)
    steps, batch, size = 3, 2, 3

    def tensor(*shape, low=-1.0, high=1.0):
        values = torch.rand(*shape, generator=generator, dtype=torch.float64)
        return (values * (high - low) + low).requires_grad_(True)

    gamma = tensor(steps, batch, size, low=0.1, high=0.95) if decay else None
    drop = torch.tensor([[2.0, 0.0, 2.0], [2.0, 2.0, 0.0]], dtype=torch.float64)
    inputs = (tensor(steps, batch, 3 * size), gamma, tensor(batch, size),
              tensor(3 * size, size), tensor(3 * size), drop)
    assert torch.autograd.gradcheck(fused_recurrence, inputs)


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.5])
def test_fused_loop_matches_python_loop_with_and_without_gradients(recurrent_dropout):
    """The buffered kernel (also used under no_grad) gives the reference loop's outputs,
    final state and parameter gradients."""
    x, observed, delta = _inputs(batch=4, steps=9, seed=5)
    results = {}
    for loop in ("fused", "python"):
        model = _model(loop=loop, recurrent_dropout=recurrent_dropout, input_dropout=0.2)
        torch.manual_seed(7)
        out, state = model(x, observed, delta)
        out.sum().backward()
        grads = {name: p.grad.clone() for name, p in model.named_parameters()}
        model.eval()
        with torch.no_grad():
            eval_out, _ = model(x, observed, delta)
        results[loop] = (out.detach(), state.hidden, grads, eval_out)
    fused, python = results["fused"], results["python"]
    torch.testing.assert_close(fused[0], python[0])
    torch.testing.assert_close(fused[1], python[1])
    torch.testing.assert_close(fused[3], python[3])
    for name, grad in python[2].items():
        torch.testing.assert_close(fused[2][name], grad, msg=name)


def test_classifier_static_to_state_conditions_the_recurrence():
    """With static_to_state the static inputs reach the logits through the recurrence too
    (head weights on static zeroed); it needs static inputs."""
    torch.manual_seed(0)
    model = GRUDClassifier(4, 5, static_size=2, static_to_state=True).double().eval()
    with torch.no_grad():
        model.head.weight[:, 5:] = 0.0
    x, observed, delta = _inputs()
    static = torch.randn(3, 2, dtype=torch.float64)
    assert not torch.allclose(model(x, observed, delta, static),
                              model(x, observed, delta, static + 1))
    plain = GRUDClassifier(4, 5, static_size=2).double().eval()
    with torch.no_grad():
        plain.head.weight[:, 5:] = 0.0
    torch.testing.assert_close(plain(x, observed, delta, static),
                               plain(x, observed, delta, static + 1))
    with pytest.raises(RecurraError, match="`static_to_state` \\(True\\) needs"):
        GRUDClassifier(4, 5, static_to_state=True)
