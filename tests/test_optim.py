"""Node-batched optimizers against torch.optim run node by node (float64)."""

import pytest
import torch

from fedopt.optim import SGD, Adam, Optimizer

K, DIM, STEPS = 5, 7, 12


def grads_of(x: torch.Tensor, step: int) -> torch.Tensor:
    """A deterministic, state-dependent gradient for every node (rows of ``x``)."""
    scale = torch.arange(1, x.shape[0] + 1, dtype=x.dtype).unsqueeze(1)
    return scale * torch.sin(x + 0.3 * step) + 0.1 * x**3


def run_batched(opt: Optimizer, x0: torch.Tensor, lr: float, masks: list[torch.Tensor]):
    """All nodes at once; at step s only the nodes in ``masks[s]`` are updated."""
    x = x0.clone()
    state = opt.init(K, DIM, x.dtype, x.device)
    for s, mask in enumerate(masks):
        rows = torch.nonzero(mask).squeeze(1)
        g = grads_of(x, s)[rows]
        x[rows] -= opt.update(state, g, lr, rows)
    return x, state


def run_torch(make, x0: torch.Tensor, masks: list[torch.Tensor]) -> torch.Tensor:
    """One torch.optim optimizer per node, stepped in a Python loop."""
    params = [x0[i].clone().requires_grad_(True) for i in range(K)]
    opts = [make([p]) for p in params]
    for s, mask in enumerate(masks):
        full = grads_of(torch.stack([p.detach() for p in params]), s)
        for i in range(K):
            if mask[i]:
                params[i].grad = full[i].clone()
                opts[i].step()
    return torch.stack([p.detach() for p in params])


def masks_of(kind: str) -> list[torch.Tensor]:
    if kind == "all":
        return [torch.ones(K, dtype=torch.bool) for _ in range(STEPS)]
    # sampled nodes: node i joins at step i, then skips the steps with (s + i) % 3 == 0
    return [
        torch.tensor([s >= i and (s + i) % 3 != 0 for i in range(K)], dtype=torch.bool)
        for s in range(STEPS)
    ]


X0 = torch.linspace(-1.0, 1.5, K * DIM, dtype=torch.float64).reshape(K, DIM)


@pytest.mark.parametrize("sampled", ["all", "sampled"])
@pytest.mark.parametrize(
    ("momentum", "nesterov"), [(0.0, False), (0.9, False), (0.5, True), (0.99, True)]
)
def test_sgd_momentum_and_nesterov_equal_torch_sgd(momentum, nesterov, sampled) -> None:
    masks = masks_of(sampled)
    lr = 0.05
    ours, state = run_batched(SGD(momentum=momentum, nesterov=nesterov), X0, lr, masks)
    ref = run_torch(
        lambda p: torch.optim.SGD(p, lr=lr, momentum=momentum, nesterov=nesterov), X0, masks
    )
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    assert not torch.equal(ours, X0)
    assert set(state) == ({"m"} if momentum else set())


@pytest.mark.parametrize("sampled", ["all", "sampled"])
@pytest.mark.parametrize(("betas", "eps"), [((0.9, 0.999), 1e-8), ((0.5, 0.9), 1e-3)])
def test_adam_with_per_node_bias_correction_equals_torch_adam(betas, eps, sampled) -> None:
    masks = masks_of(sampled)
    lr = 0.01
    opt = Adam(beta1=betas[0], beta2=betas[1], eps=eps)
    ours, state = run_batched(opt, X0, lr, masks)
    ref = run_torch(lambda p: torch.optim.Adam(p, lr=lr, betas=betas, eps=eps), X0, masks)
    assert torch.allclose(ours, ref, rtol=0, atol=1e-12)
    counts = torch.stack(masks).sum(0).to(torch.float64)
    assert torch.equal(state["step"].squeeze(1), counts)
    if sampled == "sampled":
        assert len(set(counts.tolist())) > 1  # the nodes' bias corrections really differ


def test_ema_momentum_is_the_robust_p2p_update_bit_for_bit() -> None:
    beta, lr = 0.99, 0.2
    opt = SGD(momentum=beta, dampening=beta)
    state = opt.init(K, DIM, torch.float64, torch.device("cpu"))
    rows = torch.tensor([0, 2, 3])
    m = torch.zeros(K, DIM, dtype=torch.float64)
    for s in range(5):
        g = grads_of(X0, s)[rows]
        step = opt.update(state, g, lr, rows)
        m[rows] = m[rows].mul_(beta).add_(g, alpha=1 - beta)  # the pre-optim.py code
        assert torch.equal(step, lr * m[rows])
    assert torch.equal(state["m"], m)
    assert torch.equal(state["m"][[1, 4]], torch.zeros(2, DIM, dtype=torch.float64))


def test_update_without_rows_works_in_place_on_the_state() -> None:
    opt = SGD(momentum=0.5)
    state = opt.init(K, DIM, torch.float64, torch.device("cpu"))
    buf = state["m"]
    g = grads_of(X0, 0)
    step = opt.update(state, g, 0.1)
    assert state["m"] is buf and torch.equal(buf, g)
    assert torch.equal(step, 0.1 * g)


def test_reset_round_zeroes_the_state_and_never_keeps_it() -> None:
    g = grads_of(X0, 0)
    for reset, kept in (("round", False), ("never", True)):
        opt = Adam(reset=reset)
        state = {"x": X0.clone(), **opt.init(K, DIM, torch.float64, torch.device("cpu"))}
        first = opt.update(state, g, 0.1)
        opt.start_round(state)
        assert bool(state["step"].eq(1).all()) is kept
        assert torch.equal(state["x"], X0)  # the algorithm's own keys are left alone
        second = opt.update(state, g, 0.1)
        assert torch.equal(first, second) is not kept  # a fresh state repeats step one


def test_state_keys() -> None:
    assert Adam().state_keys == ("m", "v", "step")
    assert SGD(momentum=0.9).state_keys == ("m",) and SGD().state_keys == ()


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SGD(momentum=1.0), r"momentum: must be a number in \[0, 1\), got 1.0"),
        (lambda: SGD(nesterov=True), "nesterov: needs momentum > 0"),
        (lambda: SGD(momentum=0.5, dampening=2.0), r"dampening: must be in \[0, 1\], got 2.0"),
        (lambda: Adam(beta2=-0.1), r"beta2: must be a number in \[0, 1\), got -0.1"),
        (lambda: Adam(eps=0.0), "eps: must be > 0, got 0.0"),
        (lambda: SGD(reset="epoch"), "reset: must be 'round' or 'never', got 'epoch'"),
    ],
)
def test_bad_hyperparameters_are_refused(make, match) -> None:
    with pytest.raises(ValueError, match=match):
        make()
