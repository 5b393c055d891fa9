"""radam.torch: torch.optim.Optimizer subclasses stepped by radam's kernel.

The oracle is torch.optim itself (its optimizers implement the same formulas,
docs/formulas.md): a model trained side by side with radam.torch.X and
torch.optim.X, under the same schedulers, hooks and state dict moves, must end
equal (float64 to 1e-12, float32 within its rounding).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

torch = pytest.importorskip("torch")
rt = pytest.importorskip("radam.torch")
import radam  # noqa: E402


def _digits():
    sklearn = pytest.importorskip("sklearn.datasets")
    x, y = sklearn.load_digits(return_X_y=True)
    return x / 16.0, y


def _mlp(dtype, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 32), torch.nn.Tanh(), torch.nn.Linear(32, 10)
    ).to(dtype)


def _groups(model):
    """Two groups: the hidden layer, and the output layer (which sometimes gets no grads)."""
    return [
        {"params": list(model[0].parameters())},
        {"params": list(model[2].parameters()), "lr": 0.02, "weight_decay": 0.0},
    ]


def _twin(model):
    other = _mlp(next(model.parameters()).dtype)
    other.load_state_dict(model.state_dict())
    return other


def _train(model, opt, sched, x, y, steps, start=0):
    for t in range(start, start + steps):
        idx = slice((t * 64) % 1600, (t * 64) % 1600 + 64)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        if t % 3 == 1:  # the output layer's group gets no grads on these steps
            for p in model[2].parameters():
                p.grad = None
        opt.step()
        if sched is not None:
            sched.step()


def _assert_close(a, b, rtol, atol):
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        np.testing.assert_allclose(
            p.detach().double().numpy(),
            q.detach().double().numpy(),
            rtol=rtol,
            atol=atol,
            err_msg=name,
        )


@pytest.mark.parametrize(
    "dtype, rtol, atol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 2e-4, 2e-5)]
)
def test_an_mlp_on_digits_trains_as_with_torch_optim_adamw(dtype, rtol, atol):
    x, y = _digits()
    x, y = torch.tensor(x, dtype=dtype), torch.tensor(y)
    ours_model = _mlp(dtype)
    theirs_model = _twin(ours_model)
    ours = rt.AdamW(_groups(ours_model), lr=0.01, weight_decay=0.05)
    theirs = torch.optim.AdamW(_groups(theirs_model), lr=0.01, weight_decay=0.05)
    lam = lambda t: 0.99**t  # noqa: E731
    s1 = torch.optim.lr_scheduler.LambdaLR(ours, lam)
    s2 = torch.optim.lr_scheduler.LambdaLR(theirs, lam)
    _train(ours_model, ours, s1, x, y, 300)
    _train(theirs_model, theirs, s2, x, y, 300)
    _assert_close(ours_model, theirs_model, rtol, atol)
    # Each param's own step count, as torch's.
    for p, q in zip(ours_model.parameters(), theirs_model.parameters()):
        assert float(ours.state[p]["step"]) == float(theirs.state[q]["step"])
    assert float(ours.state[ours_model[2].bias]["step"]) == 200


@pytest.fixture
def float64_scalars():
    """torch keeps its step scalars (NAdam's mu_product) in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


@pytest.mark.parametrize("name", ["Adam", "AdamW", "Adamax", "NAdam", "RAdam"])
def test_every_class_matches_torch_and_state_dicts_move_both_ways_mid_run(name, float64_scalars):
    x, y = _digits()
    x, y = torch.tensor(x), torch.tensor(y)
    kwargs = {"lr": 0.01, "weight_decay": 0.01}
    a_model = _mlp(torch.float64)
    b_model = _twin(a_model)
    a = getattr(rt, name)(_groups(a_model), **kwargs)
    b = getattr(torch.optim, name)(_groups(b_model), **kwargs)
    _train(a_model, a, None, x, y, 20)
    _train(b_model, b, None, x, y, 20)
    _assert_close(a_model, b_model, 1e-12, 1e-12)
    # radam -> torch and torch -> radam, mid-run: both continue as before.
    c_model, d_model = _twin(a_model), _twin(b_model)
    c = getattr(torch.optim, name)(_groups(c_model), **kwargs)
    c.load_state_dict(a.state_dict())
    d = getattr(rt, name)(_groups(d_model), lr=0.5)
    d.load_state_dict(b.state_dict())
    assert d.param_groups[1]["lr"] == 0.02  # the dict's options win
    for model, opt in ((a_model, a), (b_model, b), (c_model, c), (d_model, d)):
        _train(model, opt, None, x, y, 20, start=20)
    for other in (b_model, c_model, d_model):
        _assert_close(a_model, other, 1e-12, 1e-12)


def test_schedulers_that_write_betas_and_lr_work_as_on_torch():
    x, y = _digits()
    x, y = torch.tensor(x), torch.tensor(y)
    a_model = _mlp(torch.float64)
    b_model = _twin(a_model)
    a = rt.Adam(a_model.parameters(), lr=0.01)
    b = torch.optim.Adam(b_model.parameters(), lr=0.01)
    scheds = []
    for opt in (a, b):
        one = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=60)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2)
        scheds.append((one, plateau))
    for t in range(60):
        for model, opt, (one, plateau) in zip((a_model, b_model), (a, b), scheds):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[:128]), y[:128])
            loss.backward()
            opt.step()
            one.step()
            if t % 10 == 9:
                plateau.step(1.0)  # no improvement: the lr drops
    assert a.param_groups[0]["betas"] == b.param_groups[0]["betas"]
    assert a.param_groups[0]["betas"][0] != 0.9  # cycle_momentum wrote them
    _assert_close(a_model, b_model, 1e-12, 1e-12)


def test_grad_scaler_clipping_closure_hooks_zero_grad_and_add_param_group():
    x, y = _digits()
    x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y)
    a_model = _mlp(torch.float32)
    b_model = _twin(a_model)
    a = rt.AdamW([{"params": list(a_model[0].parameters())}], lr=0.01)
    b = torch.optim.AdamW([{"params": list(b_model[0].parameters())}], lr=0.01)
    calls = []
    a.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    a.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    scalers = [torch.amp.GradScaler("cpu", init_scale=2.0**8) for _ in range(2)]
    for t in range(30):
        if t == 10:  # the output layer joins mid-run
            a.add_param_group({"params": list(a_model[2].parameters()), "lr": 0.005})
            b.add_param_group({"params": list(b_model[2].parameters()), "lr": 0.005})
        for model, opt, scaler in zip((a_model, b_model), (a, b), scalers):

            def closure(model=model, opt=opt, scaler=scaler):
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x[:256]), y[:256])
                scaler.scale(loss).backward()
                return loss

            loss = closure()
            scaler.unscale_(opt)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            scaler.step(opt)
            scaler.update()
        assert loss is not None
    assert calls == ["pre", "post"] * 30
    _assert_close(a_model, b_model, 2e-4, 2e-5)
    # step(closure) returns the closure's loss
    loss = a.step(lambda: torch.tensor(3.0))
    assert float(loss) == 3.0
    a.zero_grad()
    assert all(p.grad is None for g in a.param_groups for p in g["params"])


def test_state_is_torch_tensors_sharing_the_kernels_memory():
    p = torch.nn.Parameter(torch.ones(5))
    opt = rt.Adam([p], lr=0.1)
    p.grad = torch.full((5,), 0.5)
    ptr = p.data_ptr()
    opt.step()
    assert p.data_ptr() == ptr and float(p.detach()[0]) != 1.0
    exp_avg = opt.state[p]["exp_avg"]
    inner = opt._radam.state[0]["exp_avg"]
    assert exp_avg.data_ptr() == inner.ctypes.data
    before = exp_avg.clone()
    opt.step()
    assert not torch.equal(before, exp_avg)  # the kernel wrote it in place
    assert float(opt.state[p]["step"]) == 2.0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_params_are_stepped_in_place_as_radam_steps_their_arrays(dtype):
    ml_dtypes = pytest.importorskip("ml_dtypes")
    np_dtype = {torch.bfloat16: ml_dtypes.bfloat16, torch.float16: np.float16}[dtype]
    torch.manual_seed(1)
    p = torch.nn.Parameter(torch.randn(300).to(dtype))
    array = p.detach().float().numpy().astype(np_dtype)
    opt = rt.AdamW([p], lr=0.01, stochastic_rounding=True, rounding_seed=7)
    ref = radam.AdamW([array], lr=0.01, stochastic_rounding=True, rounding_seed=7)
    for _ in range(5):
        g = torch.randn(300).to(dtype)
        p.grad = g
        opt.step()
        ref.step([g.float().numpy().astype(np_dtype)])
    assert p.detach().float().numpy().tobytes() == array.astype(np.float32).tobytes()


@pytest.mark.parametrize(
    "options", [{"state_dtype": "bfloat16"}, {"state_dtype": "8bit"}, {"master_weights": True}]
)
def test_radams_extras_through_the_constructor(options):
    torch.manual_seed(2)
    dtype = torch.bfloat16 if options.get("master_weights") else torch.float32
    p = torch.nn.Parameter(torch.randn(8192).to(dtype))
    opt = rt.AdamW([p], lr=0.01, max_gradient_norm=1.0, skip_nonfinite=True, **options)
    for _ in range(3):
        p.grad = torch.randn(8192).to(dtype)
        opt.step()
    p.grad = torch.full((8192,), float("nan")).to(dtype)
    before = p.detach().clone()
    opt.step()  # skipped: a NaN gradient
    assert torch.equal(before, p.detach()) and opt._radam.skipped_steps == 1
    assert float(opt.state[p]["step"]) == 3.0
    sd = opt.state_dict()
    again = rt.AdamW([torch.nn.Parameter(p.detach().clone())], lr=0.5, **options)
    again.load_state_dict(sd)
    for k, v in opt.state[p].items():
        assert torch.equal(v, next(iter(again.state.values()))[k]), k


def test_pickling_continues_the_run():
    x, y = _digits()
    x, y = torch.tensor(x), torch.tensor(y)
    model = _mlp(torch.float64)
    opt = rt.NAdam(_groups(model), lr=0.01)
    _train(model, opt, None, x, y, 10)
    model2, opt2 = pickle.loads(pickle.dumps((model, opt)))
    _train(model, opt, None, x, y, 10, start=10)
    _train(model2, opt2, None, x, y, 10, start=10)
    for p, q in zip(model.parameters(), model2.parameters()):
        assert torch.equal(p, q)


def _refused(make, exc, *words):
    with pytest.raises(exc) as info:
        make()
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_refusals_name_the_param_and_the_reason():
    _refused(lambda: rt.Adam([torch.zeros(3, device="meta")]), ValueError, "[0]", "meta")
    _refused(lambda: rt.Adam([torch.zeros(3, dtype=torch.complex64)]), TypeError, "complex")
    _refused(lambda: rt.Adam([torch.zeros(4, 3).t()]), ValueError, "[0]", "contiguous")
    _refused(lambda: rt.Adam([torch.zeros(3, dtype=torch.int32)]), TypeError, "int32")
    _refused(lambda: rt.Adam([torch.zeros(3)], capturable=True), ValueError, "capturable")
    _refused(lambda: rt.Adam([torch.zeros(3)], differentiable=True), ValueError, "differentiable")
    _refused(lambda: rt.Adam([torch.zeros(3)], lr=-1.0), ValueError, "lr")
    _refused(lambda: rt.Adam([torch.zeros(3)], frobnicate=1), TypeError, "frobnicate")
    rt.Adam([torch.zeros(3)], foreach=True, fused=True)  # accepted, meaning nothing


@pytest.mark.parametrize("case", ["sparse", "strided", "dtype"])
def test_a_bad_grad_is_refused_and_changes_nothing(case):
    good = torch.nn.Parameter(torch.ones(4, 3))
    p = torch.nn.Parameter(torch.ones(4, 3))
    opt = rt.Adam([good, p], lr=0.1)
    good.grad, p.grad = torch.ones(4, 3), torch.ones(4, 3)
    opt.step()
    state = {k: v.clone() for k, v in opt.state[p].items()}
    before = (good.detach().clone(), p.detach().clone())
    good.grad = torch.ones(4, 3)
    if case == "sparse":
        p.grad = torch.ones(4, 3).to_sparse()
        words = ["[1]", "sparse"]
    elif case == "strided":
        p.grad = torch.ones(3, 4).t()
        words = ["[1]", "non-contiguous"]
    else:
        p.grad = torch.ones(4, 3)
        p.grad.data = torch.ones(4, 3, dtype=torch.float64)
        words = ["[1]", "float64"]
    with pytest.raises((TypeError, ValueError)) as info:
        opt.step()
    assert all(w in str(info.value) for w in words), str(info.value)
    assert torch.equal(good, before[0]) and torch.equal(p, before[1])
    assert all(torch.equal(v, opt.state[p][k]) for k, v in state.items())


def test_a_transformers_trainer_runs_with_radam_torch_adamw(tmp_path):
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="transformers.Trainer needs accelerate")
    config = transformers.BertConfig(
        vocab_size=50,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=16,
        num_labels=2,
    )
    model = transformers.BertForSequenceClassification(config)
    data = [
        {"input_ids": torch.randint(0, 50, (8,)), "labels": torch.tensor(i % 2)} for i in range(16)
    ]
    opt = rt.AdamW(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=4,
        per_device_train_batch_size=4,
        report_to=[],
        use_cpu=True,
    )
    before = [p.detach().clone() for p in model.parameters()]
    trainer = transformers.Trainer(
        model=model, args=args, train_dataset=data, optimizers=(opt, sched)
    )
    trainer.train()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    steps = {float(entry["step"]) for entry in opt.state.values()}
    assert steps == {4.0}  # the Trainer stepped radam's optimizer, max_steps times
