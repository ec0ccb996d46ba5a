"""torch.distributed.device_mesh: ranks laid out as an n-dimensional array, one process group
per row along each dimension. A (2, 4) mesh of 8 ranks has, along dimension 0, four groups of
two ranks (0 and 4, 1 and 5, ...) and along dimension 1 two groups of four (0-3, 4-7): data
parallel over one, sharding over the other (HSDP), as in torch.

    mesh = init_device_mesh("cpu", (2, 4), mesh_dim_names=("replicate", "shard"))
    dist.all_reduce(x, group=mesh.get_group("replicate"))
    mesh["shard"].size()        # 4

Every rank builds every group of the mesh (``new_group`` is collective), so every rank must
create the same meshes in the same order, as with ``new_group``.
"""
from __future__ import annotations

import numpy as np

from .. import distributed as dist
from ..backend import device as _device
from ..tensor import Tensor

__all__ = ["DeviceMesh", "init_device_mesh"]


def _mesh_array(mesh, what):
    if isinstance(mesh, Tensor):
        mesh = mesh.numpy()
    arr = np.asarray(mesh)
    if arr.dtype.kind not in "iu":
        raise TypeError(f"{what}: mesh must hold integer ranks, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.size == 0:
        raise ValueError(f"{what}: mesh must be a non-empty array of ranks, got shape "
                         f"{arr.shape}")
    return arr.astype(np.int64)


class DeviceMesh:
    """``DeviceMesh(device_type, mesh, mesh_dim_names=None)``: the ranks in ``mesh`` (an
    integer array or Tensor, each world rank at most once and this process's among them),
    with a process group per row along each dimension, made here (every rank must make the
    same meshes in the same order). Starts the default process group where none is."""

    def __init__(self, device_type, mesh, *, mesh_dim_names=None, backend_override=None,
                 _init_backend=True, _groups=None):
        self.device_type = _device(device_type).type
        arr = _mesh_array(mesh, "DeviceMesh")
        if mesh_dim_names is not None:
            mesh_dim_names = tuple(mesh_dim_names)
            if len(mesh_dim_names) != arr.ndim:
                raise ValueError(f"DeviceMesh: mesh_dim_names {mesh_dim_names} name "
                                 f"{len(mesh_dim_names)} dimensions, the mesh has {arr.ndim} "
                                 f"(shape {arr.shape})")
            if len(set(mesh_dim_names)) != len(mesh_dim_names):
                raise RuntimeError(f"DeviceMesh: each mesh_dim_name must be unique, got "
                                   f"{mesh_dim_names}")
        self.mesh_dim_names = mesh_dim_names
        self._mesh = arr
        if not dist.is_initialized():
            if not _init_backend:
                raise RuntimeError("DeviceMesh: the default process group is not initialised")
            dist.init_process_group("nccl" if self.device_type == "cuda" else "mpi")
        world, me = dist.get_world_size(), dist.get_rank()
        flat = arr.reshape(-1)
        if len(set(flat.tolist())) != flat.size:
            raise ValueError(f"DeviceMesh: mesh {arr.tolist()} names a rank twice")
        if flat.min() < 0 or flat.max() >= world:
            raise ValueError(f"DeviceMesh: mesh {arr.tolist()} has ranks outside the world of "
                             f"{world}")
        where = np.argwhere(arr == me)
        self._coordinate = None if where.size == 0 else [int(c) for c in where[0]]
        # every rank builds every row's group, in one order, as new_group requires
        self._dim_groups = _groups if _groups is not None else [
            self._build_groups(d) for d in range(arr.ndim)]

    def _build_groups(self, dim):
        """This rank's group along ``dim`` (NON_GROUP_MEMBER outside the mesh)."""
        rows = np.moveaxis(self._mesh, dim, -1).reshape(-1, self._mesh.shape[dim])
        mine = dist.GroupMember.NON_GROUP_MEMBER
        for row in rows:
            ranks = row.tolist()
            if len(ranks) == dist.get_world_size() and ranks == sorted(ranks):
                g = dist.group.WORLD  # the whole world in order: the default group itself
            else:
                g = dist.new_group(ranks)
            if dist.get_rank() in ranks:
                mine = g
        return mine

    # ---- shape ------------------------------------------------------------------------------
    @property
    def mesh(self):
        """The ranks, as an int64 Tensor."""
        return Tensor(self._mesh.copy())

    @property
    def ndim(self):
        return self._mesh.ndim

    @property
    def shape(self):
        return tuple(self._mesh.shape)

    def size(self, mesh_dim=None):
        """How many ranks the mesh holds, or lie along ``mesh_dim``."""
        return self._mesh.size if mesh_dim is None else self._mesh.shape[self._dim(mesh_dim)]

    def _dim(self, mesh_dim):
        if isinstance(mesh_dim, str):
            if not self.mesh_dim_names or mesh_dim not in self.mesh_dim_names:
                raise KeyError(f"DeviceMesh: no dimension named {mesh_dim!r} (the mesh's are "
                               f"{self.mesh_dim_names})")
            return self.mesh_dim_names.index(mesh_dim)
        if isinstance(mesh_dim, bool) or not isinstance(mesh_dim, int) or \
                not -self.ndim <= mesh_dim < self.ndim:
            raise IndexError(f"DeviceMesh: mesh_dim {mesh_dim!r} is out of range for a "
                             f"{self.ndim}-D mesh")
        return mesh_dim % self.ndim

    # ---- this rank ----------------------------------------------------------------------------
    def get_rank(self):
        """This process's world rank."""
        return dist.get_rank()

    def get_coordinate(self):
        """This rank's index in the mesh (a list), None where the mesh does not hold it."""
        return None if self._coordinate is None else list(self._coordinate)

    def get_local_rank(self, mesh_dim=None):
        """This rank's position along ``mesh_dim`` (any dimension of a 1-D mesh)."""
        if mesh_dim is None:
            if self.ndim > 1:
                raise RuntimeError(f"DeviceMesh: a {self.ndim}-D mesh needs mesh_dim for "
                                   "get_local_rank")
            mesh_dim = 0
        if self._coordinate is None:
            raise RuntimeError(f"DeviceMesh: rank {dist.get_rank()} is not in this mesh")
        return self._coordinate[self._dim(mesh_dim)]

    def get_group(self, mesh_dim=None):
        """This rank's process group along ``mesh_dim`` (a 1-D mesh's only one by default)."""
        if mesh_dim is None:
            if self.ndim > 1:
                raise RuntimeError(f"Found the DeviceMesh have {self.ndim} dimensions. "
                                   "Optional kwarg `mesh_dim` needs to be specified when "
                                   "device_mesh.ndim > 1.")
            mesh_dim = 0
        return self._dim_groups[self._dim(mesh_dim)]

    def get_all_groups(self):
        """This rank's group along each dimension, in order."""
        return list(self._dim_groups)

    # ---- sub-meshes -----------------------------------------------------------------------------
    def __getitem__(self, names):
        """The sub-mesh of the named dimensions through this rank (``mesh["shard"]``,
        ``mesh["replicate", "shard"]``); its groups are this mesh's, not new ones."""
        if not self.mesh_dim_names:
            raise RuntimeError("DeviceMesh: cannot slice a DeviceMesh without mesh_dim_names")
        names = (names,) if isinstance(names, str) else tuple(names)
        dims = [self._dim(n) for n in names]
        if len(set(dims)) != len(dims) or dims != sorted(dims):
            raise KeyError(f"DeviceMesh: invalid mesh_dim_names {names} to slice (they must "
                           f"be distinct and in the mesh's order {self.mesh_dim_names})")
        if tuple(dims) == tuple(range(self.ndim)):
            return self
        if self._coordinate is None:
            raise RuntimeError(f"DeviceMesh: rank {dist.get_rank()} is not in this mesh")
        index = tuple(slice(None) if d in dims else self._coordinate[d] for d in range(self.ndim))
        return DeviceMesh(self.device_type, self._mesh[index], mesh_dim_names=names,
                          _groups=[self._dim_groups[d] for d in dims])

    def __eq__(self, other):
        if not isinstance(other, DeviceMesh):
            return NotImplemented
        return (self.device_type == other.device_type and self.shape == other.shape
                and bool((self._mesh == other._mesh).all())
                and self.mesh_dim_names == other.mesh_dim_names)

    def __hash__(self):
        return hash((self.device_type, self.shape, tuple(self._mesh.reshape(-1).tolist()),
                     self.mesh_dim_names))

    def __repr__(self):
        names = "" if not self.mesh_dim_names else f", mesh_dim_names={self.mesh_dim_names}"
        return f"DeviceMesh('{self.device_type}', {self._mesh.tolist()}{names})"


def init_device_mesh(device_type, mesh_shape, *, mesh_dim_names=None, backend_override=None):
    """A DeviceMesh of all the world's ranks, in order, laid out as ``mesh_shape`` (whose
    product must be the world size); starts the default process group where none is."""
    mesh_shape = tuple(int(s) for s in mesh_shape)
    if mesh_dim_names is not None and len(tuple(mesh_dim_names)) != len(mesh_shape):
        raise RuntimeError(f"init_device_mesh: mesh_shape {mesh_shape} and mesh_dim_names "
                           f"{tuple(mesh_dim_names)} should have same length!")
    if _device(device_type).index is not None:
        raise RuntimeError(f"init_device_mesh: device_type should be a device type such as "
                           f"'cuda', not a device with an index ({device_type!r})")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if _device(device_type).type == "cuda" else "mpi")
    world = dist.get_world_size()
    if int(np.prod(mesh_shape)) != world:
        raise RuntimeError(f"init_device_mesh: mesh_shape {mesh_shape} holds "
                           f"{int(np.prod(mesh_shape))} ranks, the world has {world}")
    return DeviceMesh(device_type, np.arange(world).reshape(mesh_shape),
                      mesh_dim_names=mesh_dim_names)
