"""More of torch's top level: ``poisson`` and ``binomial`` sampling, the randomized low-rank
SVD and PCA (``svd_lowrank``, ``pca_lowrank``, after Halko, Martinsson and Tropp 2011,
Algorithm 4.4 with ``niter`` power iterations), ``minidl.dtype`` (the class of minidl's dtypes:
NumPy's), ``get_device_module``, and the ``Tensor.is_*`` device queries that are always False
here (meta, mps, xpu, ...), and ``Tensor.untyped_storage()``/``storage()``: windows on the
memory a tensor's array lives in (``data_ptr()`` equal for tensors that share it)."""
from __future__ import annotations

import numpy as np

from . import backend
from .backend import get_array_module, torch_random
from .backend.dtypes import is_floating
from .tensor import Function, Tensor

dtype = np.dtype  # isinstance(minidl.float32, minidl.dtype), as torch.dtype


class Poisson(Function):
    """Draws that depend on ``rates`` without a usable derivative: PyTorch gives poisson a zero
    gradient (the draws are piecewise constant in the rate)."""

    def forward(self, rates, draws):
        return draws

    def backward(self, g):
        return get_array_module(g).zeros_like(g)

    def graph_backward(self, g, out):
        return g * 0


def _float_rates(name, t):
    if not isinstance(t, Tensor):
        raise TypeError(f"{name}: expected a Tensor, got {type(t).__name__}")
    if not is_floating(t.data.dtype):
        raise TypeError(f"{name}: not implemented for {t.dtype} (a floating tensor of rates "
                        "or counts is needed)")


def poisson(input, generator=None):
    """A Poisson draw for each element, with that element as its rate (same dtype); its
    gradient with respect to the rates is zero, as in PyTorch."""
    _float_rates("poisson", input)
    rates = input.numpy()
    if np.any(rates < 0) or np.any(np.isnan(rates)):
        raise ValueError("poisson: invalid Poisson rate, expected rate to be non-negative")
    gen = backend.generator_of(generator, input.device, "poisson")
    draws = torch_random.poisson(gen, rates).astype(input.data.dtype)  # torch's numbers
    out = Tensor(draws, device=input.device).data
    return Poisson.apply(input, draws=out)


def binomial(count, prob, generator=None):
    """A draw of Binomial(count, prob) for each pair of elements (same dtype as ``count``;
    counts are taken whole, rounded down, and probabilities clipped to [0, 1], as PyTorch's
    CPU kernel does); not differentiable, as in PyTorch."""
    _float_rates("binomial", count)
    _float_rates("binomial", prob)
    try:
        shape = np.broadcast_shapes(count.shape, prob.shape)  # broadcast, as torch's
    except ValueError:
        raise ValueError(f"binomial: count (shape {count.shape}) and prob (shape {prob.shape}) "
                         "do not broadcast") from None
    dtype = count.data.dtype
    work = np.float64 if dtype == np.float64 else np.float32  # bfloat16/float16: in float
    n = np.broadcast_to(count.numpy().astype(work), shape)
    p = np.broadcast_to(prob.numpy().astype(work), shape)
    gen = backend.generator_of(generator, count.device, "binomial")
    # torch's sampler and numbers: a count <= 0 or a probability <= 0 draws 0, one >= 1 the
    # count (as it is), a NaN probability NaN (none of them taking draws)
    draws = torch_random.binomial(gen, n, p, work).astype(dtype)
    return Tensor(draws, device=count.device)


def _standard_gamma(input, generator=None):
    """Gamma(input, 1) draws, torch's sampler and numbers (float32/float64); differentiable
    in ``input`` by the implicit gradient, as torch's."""
    from .distributions._special import StandardGamma

    _float_rates("_standard_gamma", input)
    gen = backend.generator_of(generator, input.device, "_standard_gamma")
    return StandardGamma.apply(input, generator=gen)


def _sample_dirichlet(input, generator=None):
    """Dirichlet(input) draws on the last dimension, torch's sampler and numbers (not
    differentiable, as torch's)."""
    _float_rates("_sample_dirichlet", input)
    if input.ndim == 0:
        raise ValueError("_sample_dirichlet: expected a tensor of at least 1 dimension "
                         "(concentrations on the last one), got a 0-d one")
    gen = backend.generator_of(generator, input.device, "_sample_dirichlet")
    return Tensor(torch_random.dirichlet(gen, input.numpy()), device=input.device)


# ---- randomized low-rank SVD and PCA --------------------------------------------------------
def _approximate_basis(A, q, niter, M):
    """An orthonormal (.., m, q) basis Q whose span holds most of A's range: A applied to a
    Gaussian (n, q) test matrix, then ``niter`` rounds of power iteration (A^H then A), each
    re-orthonormalised by QR, which sharpens the basis where singular values decay slowly."""
    from .creation import randn
    from .linalg import qr

    def apply(X, adjoint=False):
        AX = (A.mH if adjoint else A) @ X
        return AX if M is None else AX - (M.mH if adjoint else M) @ X

    R = randn(A.shape[-1], q, dtype=A.dtype, device=A.device)
    Q = qr(apply(R))[0]
    for _ in range(niter):
        Q = qr(apply(Q, adjoint=True))[0]
        Q = qr(apply(Q))[0]
    return Q


def svd_lowrank(A, q=6, niter=2, M=None):
    """(U, S, V) with A ~ U diag(S) V^H, of rank ``q``, found by a randomized range finder and
    the SVD of the small (q, n) projection: exact when A's rank is at most q, and differentiable
    (every step is an op with a gradient). ``M`` (broadcast to A's shape) is subtracted from A
    first without forming A - M. The draws come from minidl's random state, so results repeat
    under ``manual_seed``."""
    from .linalg import svd

    if not isinstance(A, Tensor) or A.ndim < 2:
        raise ValueError("svd_lowrank: A must be a Tensor of at least 2 dims (a batch of "
                         f"matrices), got {getattr(A, 'shape', type(A).__name__)}")
    if A.data.dtype.kind not in "fc":
        raise TypeError(f"svd_lowrank: A must be floating (or complex), got {A.dtype}")
    m, n = A.shape[-2:]
    q = 6 if q is None else q
    if isinstance(q, bool) or not isinstance(q, int) or q < 0:
        raise ValueError(f"svd_lowrank: q must be a non-negative int, got {q!r}")
    q = min(q, m, n)  # torch's default q=6 on a smaller matrix: all of its singular values
    if not isinstance(niter, int) or niter < 0:
        raise ValueError(f"svd_lowrank: niter must be a non-negative int, got {niter!r}")
    if M is not None:
        M = M.broadcast_to(A.shape)
    wide = m < n
    if wide:  # work with the tall form: the basis is of the smaller side
        A = A.mH
        M = None if M is None else M.mH
    Q = _approximate_basis(A, q, niter, M)
    B = Q.mH @ A
    if M is not None:
        B = B - Q.mH @ M
    U, S, Vh = svd(B, full_matrices=False)
    U, V = Q @ U, Vh.mH
    return (V, S, U) if wide else (U, S, V)


def pca_lowrank(A, q=None, center=True, niter=2):
    """(U, S, V) of the rank-``q`` principal components of A's rows (q defaults to
    min(6, m, n)): svd_lowrank of A minus its column means (when ``center``). The principal
    directions are V's columns; projections are ``A @ V[:, :k]``."""
    if not isinstance(A, Tensor) or A.ndim < 2:
        raise ValueError(f"pca_lowrank: A must be a Tensor of at least 2 dims, got "
                         f"{getattr(A, 'shape', type(A).__name__)}")
    m, n = A.shape[-2:]
    q = min(6, m, n) if q is None else q
    if not isinstance(q, int) or not 0 <= q <= min(m, n):
        raise ValueError(f"pca_lowrank: q(={q!r}) must be non-negative integer and not greater "
                         f"than min(m, n)={min(m, n)}")
    if center:
        return svd_lowrank(A, q, niter, M=A.mean(dim=-2, keepdim=True))
    return svd_lowrank(A, q, niter)


def get_device_module(device=None):
    """The module of a device's API, as torch's: ``minidl.cuda`` for "cuda" (and for None, the
    current accelerator, as torch answers); "cpu" has no module here."""
    from . import cuda

    name = getattr(device, "type", device)
    if name is None or isinstance(name, str) and name.split(":")[0] == "cuda":
        return cuda
    raise RuntimeError(f"get_device_module: no device module for {device!r} (minidl has "
                       "'cuda')")


# ---- storages: what a tensor's memory is, for code that asks whether two tensors share it ----
def _root(a):
    """The array whose memory ``a`` views (``a`` itself when it owns it)."""
    while getattr(a, "base", None) is not None and hasattr(a.base, "dtype"):
        a = a.base
    return a


def _address(a):
    return int(a.data.ptr) if hasattr(a, "device") and hasattr(a.data, "ptr") else \
        int(a.__array_interface__["data"][0])


class UntypedStorage:
    """The bytes a tensor's array lives in (its root array), as ``torch.UntypedStorage`` for
    the questions scripts ask of it: ``data_ptr()`` (equal for tensors that share memory),
    ``nbytes()``, ``size()``, ``device``, byte values by index. minidl stores no separate
    storage object; this is a window on the array, made when asked for."""

    def __init__(self, root):
        self._root = root

    def data_ptr(self):
        return _address(self._root)

    def nbytes(self):
        return int(self._root.nbytes)

    size = nbytes

    def __len__(self):
        return self.nbytes()

    def element_size(self):
        return 1

    @property
    def device(self):
        from .backend import device

        return device("cpu" if isinstance(self._root, np.ndarray) else "cuda")

    def _bytes(self):
        from .backend import to_numpy

        return np.ascontiguousarray(to_numpy(self._root)).reshape(-1).view(np.uint8)

    def __getitem__(self, index):
        out = self._bytes()[index]
        return out.tolist() if isinstance(out, np.ndarray) else int(out)

    def tolist(self):
        return self._bytes().tolist()

    def __repr__(self):
        return f"minidl.UntypedStorage of {self.nbytes()} bytes on {self.device}"


class TypedStorage(UntypedStorage):
    """The same memory in elements of the tensor's dtype, as torch's (deprecated) TypedStorage
    that ``Tensor.storage()`` returns."""

    def __init__(self, root):
        super().__init__(root)
        self.dtype = root.dtype

    def size(self):
        return int(self._root.size)

    def __len__(self):
        return self.size()

    def element_size(self):
        return int(self.dtype.itemsize)

    def untyped(self):
        return UntypedStorage(self._root)

    def _bytes(self):
        from .backend import to_numpy

        return np.ascontiguousarray(to_numpy(self._root)).reshape(-1)

    def __repr__(self):
        return f"minidl.TypedStorage of {self.size()} {self.dtype} elements on {self.device}"


def _untyped_storage(self):
    return UntypedStorage(_root(self.data))


def _typed_storage(self):
    return TypedStorage(_root(self.data))


def _false(self):
    return False


TENSOR_PROPERTIES = ("is_meta", "is_mps", "is_xpu", "is_ipu", "is_mkldnn", "is_vulkan",
                     "is_xla", "is_mtia", "is_maia", "is_quantized")


def install(namespace):
    """Put these names into minidl's namespace (where it lacks them) and the always-False
    device queries on Tensor; returns the names added."""
    for name in TENSOR_PROPERTIES:
        if not hasattr(Tensor, name):
            setattr(Tensor, name, property(_false, doc=f"False: minidl has no {name[3:]} "
                                                           "tensors."))
    for name, fn in (("untyped_storage", _untyped_storage), ("storage", _typed_storage)):
        if not hasattr(Tensor, name):
            setattr(Tensor, name, fn)
    if not hasattr(Tensor, "histogram") and "histogram" in namespace:
        setattr(Tensor, "histogram", namespace["histogram"])
    if "GradScaler" not in namespace:
        from .amp import GradScaler

        namespace["GradScaler"] = GradScaler
    added = []
    for name in ("poisson", "binomial", "_standard_gamma", "_sample_dirichlet", "svd_lowrank",
                 "pca_lowrank", "dtype", "get_device_module", "GradScaler", "UntypedStorage",
                 "TypedStorage") + \
            LEGACY_NAMES:
        if name not in namespace or name == "GradScaler":
            namespace.setdefault(name, globals().get(name))
            added.append(name)
    return added


# ---- deprecated and low-level names that old scripts still call ----------------------------------
def set_default_tensor_type(t, /):
    """torch's deprecated way to set the default dtype and device at once:
    ``set_default_tensor_type(minidl.DoubleTensor)`` or ``"torch.cuda.FloatTensor"``."""
    import warnings

    from . import legacy_types, tensor_functions

    warnings.warn("minidl.set_default_tensor_type() is deprecated as of PyTorch 2.1, please use "
                  "minidl.set_default_dtype() and minidl.set_default_device() as alternatives.",
                  UserWarning, stacklevel=2)
    if isinstance(t, str):
        parts = t.split(".")
        table = legacy_types.CUDA if "cuda" in parts[:-1] else legacy_types.CPU
        if parts[0] not in ("torch", "minidl") or parts[-1] not in table:
            raise TypeError(f"invalid type: '{t}'")
        t = table[parts[-1]]
    if not isinstance(t, legacy_types._LegacyType):
        raise TypeError(f"set_default_tensor_type: expected a legacy tensor type such as "
                        f"minidl.FloatTensor or its name, got {t!r}")
    if not is_floating(t.dtype):
        raise TypeError("only floating-point types are supported as the default type")
    if t.is_cuda:  # torch refuses a CUDA type it cannot make, before changing anything
        from .backend import require_cuda

        require_cuda()
    tensor_functions.set_default_dtype(t.dtype)
    tensor_functions.set_default_device("cuda" if t.is_cuda else "cpu")


def frobenius_norm(input, dim=(-2, -1), keepdim=False):
    """Deprecated (torch keeps it for TorchScript): ``linalg.vector_norm(input, 2, dim,
    keepdim)``."""
    import warnings

    from .math_ops import vector_norm

    warnings.warn("frobenius_norm is deprecated; use linalg.vector_norm(A, 2., dim, keepdim)",
                  UserWarning, stacklevel=2)
    return vector_norm(input, 2, dim=dim, keepdim=keepdim)


def nuclear_norm(input, dim=(-2, -1), keepdim=False):
    """Deprecated: ``linalg.matrix_norm(input, 'nuc', dim, keepdim)``."""
    import warnings

    from .linalg import matrix_norm

    warnings.warn("nuclear_norm is deprecated; use linalg.matrix_norm(A, 'nuc', dim, keepdim)",
                  UserWarning, stacklevel=2)
    return matrix_norm(input, "nuc", dim=dim, keepdim=keepdim)


def matrix_rank(input, tol=None, symmetric=False, *, out=None):
    """Removed in torch 1.9; raises as torch 2.13 does, naming the replacement."""
    raise RuntimeError("This function was deprecated since version 1.9 and is now removed.\n"
                       "Please use the `minidl.linalg.matrix_rank` function instead. The "
                       "parameter 'symmetric' was renamed in `minidl.linalg.matrix_rank()` to "
                       "'hermitian'.")


def is_distributed(input):
    """False: a minidl Tensor lives in one process (torch's answer for a plain tensor)."""
    return False


def embedding_renorm_(input, indices, max_norm, norm_type):
    """Scale each row of ``input`` named in ``indices`` whose ``norm_type``-norm exceeds
    ``max_norm`` down to it, in place (what ``embedding(max_norm=...)`` does); returns
    ``input``."""
    from .functional import _renorm_rows_

    idx = indices.data if isinstance(indices, Tensor) else np.asarray(indices)
    if idx.size:
        _renorm_rows_(input, idx, float(max_norm), float(norm_type))
    return input


def feature_dropout(input, p, train):
    """Zero whole feature maps (dim 1 of an (N, C, ...) input) with probability ``p`` when
    ``train``, scaling the others by 1 / (1 - p)."""
    from .nn._functional.dropout import _channel_dropout

    return _channel_dropout("feature_dropout", input, p, train, False, input.ndim - 2)


def feature_dropout_(input, p, train):
    from .nn._functional.dropout import _channel_dropout

    return _channel_dropout("feature_dropout_", input, p, train, True, input.ndim - 2)


def to_dlpack(tensor):
    """``minidl.utils.dlpack.to_dlpack``, as torch.to_dlpack."""
    from .utils.dlpack import to_dlpack as convert

    return convert(tensor)


LEGACY_NAMES = ("set_default_tensor_type", "frobenius_norm", "nuclear_norm", "matrix_rank",
                "is_distributed", "embedding_renorm_", "feature_dropout", "feature_dropout_",
                "to_dlpack")
