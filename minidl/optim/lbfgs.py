"""torch.optim.LBFGS: limited-memory BFGS over all parameters as one flat vector, with a fixed
step or a strong-Wolfe line search."""
from __future__ import annotations

from ..backend import get_array_module
from ..backend import sparse as _sparse
from ..backend.dtypes import real_of
from ..complex_ops import real_pairs
from ..tensor import Tensor, enable_grad, no_grad
from .optimizer import Optimizer, _check_finite, _count_changes


def _flat(a):
    return (real_pairs(a) if a.dtype.kind == "c" else a).ravel()


def _cubic_minimum(x1, f1, g1, x2, f2, g2, bounds=None):
    """The minimiser of the cubic through (x1, f1) and (x2, f2) with slopes g1, g2, clamped to
    ``bounds`` (default: between x1 and x2); their midpoint where the cubic has no minimum."""
    low, high = bounds if bounds is not None else (min(x1, x2), max(x1, x2))
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1 ** 2 - g1 * g2
    if d2_square < 0:
        return (low + high) / 2.0
    d2 = d2_square ** 0.5
    if x1 <= x2:
        at = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
    else:
        at = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
    return min(max(at, low), high)


def _strong_wolfe(evaluate, t, d, f, g, gtd, c1=1e-4, c2=0.9, tolerance_change=1e-9, max_ls=25):
    """A step t along d meeting the strong Wolfe conditions (sufficient decrease c1, curvature
    c2): bracket a step first (growing t by cubic extrapolation), then zoom into the bracket by
    cubic interpolation, nudging away from its ends when progress stalls. ``evaluate(t)`` gives
    (loss, flat gradient) at x + t d. Returns the loss, gradient and t taken, and how many
    evaluations it made."""
    xp = get_array_module(d)
    d_norm = xp.abs(d).max()
    f_new, g_new = evaluate(t)
    evals, ls_iter = 1, 0
    gtd_new = g_new.dot(d)
    prev = (0, f, g.copy(), gtd)  # (t, f, g, gtd) at the last point tried
    bracket, done = None, False
    while ls_iter < max_ls:
        point = (t, f_new, g_new.copy(), gtd_new)
        if f_new > f + c1 * t * gtd or (ls_iter > 1 and f_new >= prev[1]):
            bracket = [prev, point]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket, done = [point], True
            break
        if gtd_new >= 0:
            bracket = [prev, point]
            break
        # no bracket yet: extrapolate, at least 1% past t and at most 10 t
        t_next = _cubic_minimum(prev[0], prev[1], prev[3], t, f_new, gtd_new,
                                bounds=(t + 0.01 * (t - prev[0]), t * 10))
        prev, t = point, t_next
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
    if ls_iter == max_ls:
        bracket = [(0, f, g, None), (t, f_new, g_new, None)]
    insufficient = False
    low, high = (0, 1) if bracket[0][1] <= bracket[-1][1] else (1, 0)
    while not done and ls_iter < max_ls:
        (ta, fa, _, ga), (tb, fb, _, gb) = bracket
        if abs(tb - ta) * d_norm < tolerance_change:
            break
        t = _cubic_minimum(ta, fa, ga, tb, fb, gb)
        lo_t, hi_t = min(ta, tb), max(ta, tb)
        margin = 0.1 * (hi_t - lo_t)
        if min(hi_t - t, t - lo_t) < margin:  # too near an end of the bracket
            if insufficient or t >= hi_t or t <= lo_t:
                t = hi_t - margin if abs(t - hi_t) < abs(t - lo_t) else lo_t + margin
                insufficient = False
            else:
                insufficient = True
        else:
            insufficient = False
        f_new, g_new = evaluate(t)
        evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1
        point = (t, f_new, g_new.copy(), gtd_new)
        if f_new > f + c1 * t * gtd or f_new >= bracket[low][1]:
            bracket[high] = point
            low, high = (0, 1) if bracket[0][1] <= bracket[1][1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high][0] - bracket[low][0]) >= 0:
                bracket[high] = bracket[low]
            bracket[low] = point
    t, f_new, g_new, _ = bracket[low]
    return f_new, g_new, t, evals


def _dense(g):
    """A sparse gradient as a dense array, as torch's LBFGS flattens one."""
    return _sparse.to_dense(g) if type(g) is _sparse.SparseCOO else g


class LBFGS(Optimizer):
    """torch.optim.LBFGS. step(closure) runs up to max_iter iterations (max_eval closure
    calls): the direction from the last history_size curvature pairs by the two-loop recursion,
    then a step of lr (the first one scaled to at most 1 / |g|_1) or, with
    line_search_fn="strong_wolfe", the line search's. It stops early when the gradient's
    largest element is under tolerance_grad or the step or the loss change is under
    tolerance_change. One parameter group only; the state is kept under the first parameter,
    as PyTorch keeps it."""

    _state_keys = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
                   "prev_flat_grad", "prev_loss", "al")

    def __init__(self, params, lr=1, max_iter=20, max_eval=None, tolerance_grad=1e-7,
                 tolerance_change=1e-9, history_size=100, line_search_fn=None):
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        super().__init__(params, dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                                      tolerance_grad=tolerance_grad,
                                      tolerance_change=tolerance_change,
                                      history_size=history_size, line_search_fn=line_search_fn))
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]

    def add_param_group(self, param_group):
        if self.param_groups:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        super().add_param_group(param_group)

    def _check_group(self, group):
        _check_finite("LBFGS", lr=group["lr"], tolerance_grad=group["tolerance_grad"],
                      tolerance_change=group["tolerance_change"])
        if group["lr"] < 0:
            raise ValueError(f"LBFGS: lr must be >= 0, got {group['lr']}")
        for key in ("max_iter", "max_eval", "history_size"):
            value = group[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"LBFGS: {key} must be an integer >= 1, got {value!r}")
        if group["line_search_fn"] not in (None, "strong_wolfe"):
            raise ValueError(f"LBFGS: line_search_fn must be None or 'strong_wolfe', got "
                             f"{group['line_search_fn']!r}")

    # ---- the parameters as one flat vector
    # a complex parameter counts as its real pairs (view_as_real), as in torch's LBFGS: the
    # flat vectors are real and their dot products the real inner product
    def _flat_grad(self):
        xp = get_array_module(self._params[0].data)
        return xp.concatenate([
            _flat(_dense(p.grad.data).astype(p.data.dtype, copy=False)) if p.grad is not None
            else _flat(xp.zeros(p.data.shape, p.data.dtype)) for p in self._params])

    def _add_to_params(self, step, direction):
        offset = 0
        for p in self._params:
            target = real_pairs(p.data) if p.data.dtype.kind == "c" else p.data
            n = target.size
            target += step * direction[offset:offset + n].reshape(target.shape)
            offset += n

    def _evaluate(self, closure):
        with enable_grad():
            return closure()

    def step(self, closure):
        """Minimize by L-BFGS; ``closure`` clears the gradients, computes the loss, calls
        backward and returns it. Returns the first loss the closure gave."""
        if closure is None or not callable(closure):
            raise TypeError("LBFGS.step needs a closure that re-evaluates the model and "
                            "returns the loss")
        with no_grad():
            loss = self._step(closure)
        _count_changes(self.param_groups[0])
        return loss

    def _step(self, closure):
        group = self.param_groups[0]
        lr, max_iter, max_eval = group["lr"], group["max_iter"], group["max_eval"]
        tol_grad, tol_change = group["tolerance_grad"], group["tolerance_change"]
        history_size = group["history_size"]
        state = self.state.setdefault(id(self._params[0]), {})
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)
        xp = get_array_module(self._params[0].data)

        orig_loss = self._evaluate(closure)
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1
        flat_grad = self._flat_grad()
        if xp.abs(flat_grad).max() <= tol_grad:
            return orig_loss

        d, t = state.get("d"), state.get("t")
        old_dirs, old_stps, ro = state.get("old_dirs"), state.get("old_stps"), state.get("ro")
        h_diag = state.get("H_diag")
        prev_flat_grad, prev_loss = state.get("prev_flat_grad"), state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs, old_stps, ro, h_diag = [], [], [], 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)
                if ys > 1e-10:  # a curvature pair that keeps the Hessian estimate positive
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0), old_stps.pop(0), ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    h_diag = ys / y.dot(y)
                # the two-loop recursion: d = -H g
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(len(old_dirs) - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q -= al[i] * old_dirs[i]
                d = r = q * h_diag
                for i in range(len(old_dirs)):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]
            prev_flat_grad = flat_grad.copy()
            prev_loss = loss
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / xp.abs(flat_grad).sum()) * lr
            else:
                t = lr
            gtd = flat_grad.dot(d)
            if gtd > -tol_change:  # not a descent direction
                break

            ls_evals = 0
            if group["line_search_fn"] == "strong_wolfe":
                start = [p.data.copy() for p in self._params]

                def at(step):
                    self._add_to_params(step, d)
                    value = float(self._evaluate(closure))
                    grad = self._flat_grad()
                    for p, x in zip(self._params, start):
                        p.data[...] = x
                    return value, grad

                loss, flat_grad, t, ls_evals = _strong_wolfe(at, t, d, loss, flat_grad, gtd)
                self._add_to_params(t, d)
                converged = xp.abs(flat_grad).max() <= tol_grad
            else:
                self._add_to_params(t, d)
                converged = False
                if n_iter != max_iter:
                    loss = float(self._evaluate(closure))
                    flat_grad = self._flat_grad()
                    converged = xp.abs(flat_grad).max() <= tol_grad
                    ls_evals = 1
            current_evals += ls_evals
            state["func_evals"] += ls_evals

            if n_iter == max_iter or current_evals >= max_eval or converged:
                break
            if xp.abs(d * t).max() <= tol_change or abs(loss - prev_loss) < tol_change:
                break

        state.update(d=d, t=t, old_dirs=old_dirs, old_stps=old_stps, ro=ro, H_diag=h_diag,
                     prev_flat_grad=prev_flat_grad, prev_loss=prev_loss)
        return orig_loss

    def state_dict(self):
        """PyTorch's LBFGS state: everything under parameter 0, vectors as Tensors."""
        def copy(value):  # the base class copies arrays; the history is lists of them
            if isinstance(value, list):
                return [Tensor(v.copy()) if hasattr(v, "shape") else v for v in value]
            return value

        sd = super().state_dict()
        sd["state"] = {k: {key: copy(v) for key, v in entry.items()}
                       for k, entry in sd["state"].items()}
        return sd

    def load_state_dict(self, state_dict):
        """Restore what state_dict() returned (or PyTorch's LBFGS state dict): the history
        vectors go to the parameters' device and dtype."""
        saved = state_dict.get("state", {}) if isinstance(state_dict, dict) else {}
        param = self._params[0].data
        xp = get_array_module(param)
        size = sum(p.data.size * (2 if p.data.dtype.kind == "c" else 1) for p in self._params)

        def restore(key, value):
            if isinstance(value, (list, tuple)):
                return [restore(key, v) for v in value]
            if value is None:
                return None
            if isinstance(value, Tensor):
                value = value.data
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            if hasattr(value, "shape") and getattr(value, "ndim", 0):
                if value.size != size:
                    raise ValueError(f"LBFGS.load_state_dict: {key} holds {value.size} "
                                     f"numbers, the parameters {size}")
                return xp.asarray(value).astype(real_of(param.dtype))
            if hasattr(value, "item"):
                value = value.item()
            return int(value) if key in ("func_evals", "n_iter") else float(value)

        new = {}
        for key, entry in saved.items():
            unknown = set(entry) - set(self._state_keys)
            if unknown:
                raise ValueError(f"LBFGS.load_state_dict: state {key} holds {sorted(unknown)}; "
                                 f"an LBFGS keeps {list(self._state_keys)}")
            if int(key) != 0:
                raise ValueError(f"LBFGS.load_state_dict: state for parameter {key}; LBFGS "
                                 "keeps its state under parameter 0")
            new[id(self._params[0])] = {k: restore(k, v) for k, v in entry.items()}
        super().load_state_dict({**state_dict, "state": {}})  # the group, checked
        self.state = new
