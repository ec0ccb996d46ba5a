"""What the optimizer parity tests share: random parameters and gradients, one step of a
minidl or a torch optimizer from given gradients, and the comparison of the parameters."""
import numpy as np

import minidl
import minidl.nn as nn

SHAPES = [(4, 3), (3,), (2, 2, 3)]


def _data(dtype, steps=6, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    grads = [[rng.standard_normal(s).astype(dtype) for s in SHAPES] for _ in range(steps)]
    return params, grads


def _step(opt, ps, step_grads):
    opt.zero_grad()
    for p, g in zip(ps, step_grads):
        if g is not None:
            p.grad = minidl.Tensor(g.copy())
    opt.step()


def _torch_step(torch, opt, ps, step_grads):
    opt.zero_grad()
    for p, g in zip(ps, step_grads):
        if g is not None:
            p.grad = torch.tensor(g)
    opt.step()


def _params(arrays):
    return [nn.Parameter(a.copy()) for a in arrays]


def _torch_params(torch, arrays):
    return [torch.nn.Parameter(torch.tensor(a.copy())) for a in arrays]


def close(ours, theirs, dtype, what, float64_tol, float32_tol):
    """minidl's parameters against torch's: the dtype kept, values within the tolerance."""
    tol = float64_tol if dtype == np.float64 else float32_tol
    for k, (a, b) in enumerate(zip(ours, theirs)):
        a, b = a.numpy(), b.detach().numpy()  # minidl's, PyTorch's
        assert a.dtype == dtype, f"{what}: parameter {k} became {a.dtype}"
        np.testing.assert_allclose(a, b, **tol, err_msg=f"{what}: parameter {k}")
