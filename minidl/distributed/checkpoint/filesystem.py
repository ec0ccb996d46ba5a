"""FileSystemWriter / FileSystemReader: a checkpoint is a directory holding one data file per
rank that wrote anything (``<save id>.rank<R>.data``: the raw bytes of its tensors' pieces and
pickled non-tensor values, one after the other) and ``.metadata`` (JSON: every key's shape,
dtype and where each piece lies, with a CRC-32 of each), written by rank 0 once every rank's
data file is in place. Every file is written under a temporary name and renamed, and the
metadata names the data files of its own save, so a save that dies part way leaves the
previous checkpoint (or none) loadable and never a mix. This is minidl's own format, not
torch's ``.distcp``."""
from __future__ import annotations

import json
import os
import pickle
import re
import zlib

import numpy as np

from .metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                       TensorStorageMetadata)

__all__ = ["FileSystemWriter", "FileSystemReader"]

METADATA = ".metadata"
_DATA = re.compile(r"[0-9a-f]{12}\.rank[0-9]+\.data(\.tmp)?")


def _fsync_rename(tmp, final):
    os.replace(tmp, final)
    try:  # make the rename itself durable
        fd = os.open(os.path.dirname(final) or ".", os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def _dtype(name):
    try:
        return np.dtype(name)
    except TypeError:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))


class FileSystemWriter:
    """Where ``save`` writes: the directory ``path`` (made if missing). ``single_file_per_rank``
    is what minidl always does; ``sync_files`` fsyncs each file before its rename."""

    def __init__(self, path, single_file_per_rank=True, sync_files=True, thread_count=1,
                 per_thread_copy_ahead=10_000_000, cache_staged_state_dict=False,
                 overwrite=True, _extensions=None, serialization_format=None):
        self.path = os.fspath(path)
        self.sync_files = bool(sync_files)
        self.overwrite = bool(overwrite)

    def reset(self, checkpoint_id=None):
        if checkpoint_id is not None:
            self.path = os.fspath(checkpoint_id)

    @property
    def checkpoint_id(self):
        return self.path

    def _check(self):
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise NotADirectoryError(f"save: checkpoint_id {self.path!r} is a file; a checkpoint "
                                     "is a directory")
        if not self.overwrite and os.path.exists(os.path.join(self.path, METADATA)):
            raise FileExistsError(f"save: {self.path!r} already holds a checkpoint and "
                                  "overwrite=False")
        try:  # as torch's: the directory and its parents are made
            os.makedirs(self.path, exist_ok=True)
        except OSError as exc:
            raise OSError(f"save: cannot make the checkpoint directory {self.path!r}: "
                          f"{exc}") from None
        if not os.access(self.path, os.W_OK):
            raise PermissionError(f"save: the checkpoint directory {self.path!r} is not "
                                  "writable")

    def _write_data(self, name, items):
        """Write ``items`` ((key, ndarray or bytes)) to ``name``; returns key -> record."""
        final = os.path.join(self.path, name)
        tmp = final + ".tmp"
        records, pos = {}, 0
        with open(tmp, "wb") as f:
            for key, value in items:
                raw = value if isinstance(value, bytes) else \
                    np.ascontiguousarray(value).tobytes()
                f.write(raw)
                records[key] = (pos, len(raw), zlib.crc32(raw))
                pos += len(raw)
            f.flush()
            if self.sync_files:
                os.fsync(f.fileno())
        _fsync_rename(tmp, final)
        return records

    def _write_metadata(self, meta):
        def chunk(c):
            return [c.offset, c.length, c.file, c.byte_offset, c.crc32]

        entries = {}
        for key, m in meta.state_dict_metadata.items():
            if isinstance(m, TensorStorageMetadata):
                entries[key] = {"tensor": [list(m.size), m.dtype, [chunk(c) for c in m.chunks]]}
            else:
                entries[key] = {"bytes": [m.file, m.byte_offset, m.length, m.crc32]}
        final = os.path.join(self.path, METADATA)
        tmp = final + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"format": "minidl-dcp", "version": meta.version,
                       "world_size": meta.world_size, "entries": entries}, f)
            f.flush()
            if self.sync_files:
                os.fsync(f.fileno())
        _fsync_rename(tmp, final)

    def _remove_stale(self, keep):
        """Data files of earlier saves into this directory (no metadata names them now)."""
        for name in os.listdir(self.path):
            if _DATA.fullmatch(name) and name not in keep:
                try:
                    os.remove(os.path.join(self.path, name))
                except OSError:
                    pass


class FileSystemReader:
    """Where ``load`` reads: a directory ``save`` wrote."""

    def __init__(self, path, _extension_registry=None):
        self.path = os.fspath(path)
        self._cache = {}

    def reset(self, checkpoint_id=None):
        if checkpoint_id is not None:
            self.path = os.fspath(checkpoint_id)
        self._cache = {}

    @property
    def checkpoint_id(self):
        return self.path

    def read_metadata(self):
        if not os.path.isdir(self.path):
            raise FileNotFoundError(f"load: checkpoint directory {self.path!r} does not exist")
        file = os.path.join(self.path, METADATA)
        if not os.path.isfile(file):
            raise FileNotFoundError(
                f"load: {self.path!r} holds no complete checkpoint: its metadata file "
                f"{METADATA!r} is missing (a save that did not finish, or not a checkpoint "
                "directory)")
        try:
            with open(file) as f:
                raw = json.load(f)
            if raw.get("format") != "minidl-dcp":
                raise ValueError("not a minidl checkpoint")
            out = {}
            for key, e in raw["entries"].items():
                if "tensor" in e:
                    size, dtype, chunks = e["tensor"]
                    out[key] = TensorStorageMetadata(tuple(size), dtype,
                                                     [ChunkStorageMetadata(*c) for c in chunks])
                else:
                    out[key] = BytesStorageMetadata(*e["bytes"])
            return Metadata(out, raw["world_size"], raw["version"])
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"load: the checkpoint metadata {file!r} is corrupt or not "
                             f"minidl's ({exc})") from None

    def _read(self, file, byte_offset, length, crc):
        key = (file, byte_offset, length)
        if key in self._cache:
            return self._cache[key]
        path = os.path.join(self.path, file)
        try:
            with open(path, "rb") as f:
                f.seek(byte_offset)
                raw = f.read(length)
        except OSError as exc:
            raise FileNotFoundError(f"load: cannot read checkpoint data file {path!r}: "
                                    f"{exc}") from None
        if len(raw) != length or zlib.crc32(raw) != crc:
            raise ValueError(f"load: checkpoint data file {path!r} is truncated or corrupt "
                             f"(bytes {byte_offset}..{byte_offset + length} do not match "
                             "their checksum)")
        self._cache[key] = raw
        return raw

    def _read_chunk(self, chunk, dtype):
        raw = self._read(chunk.file, chunk.byte_offset, chunk.length * np.dtype(dtype).itemsize,
                         chunk.crc32)
        return np.frombuffer(raw, dtype=dtype)

    def _read_object(self, m):
        return pickle.loads(self._read(m.file, m.byte_offset, m.length, m.crc32))


def storage_for(checkpoint_id, storage, cls, what, argument):
    """The ``cls`` (FileSystemWriter or FileSystemReader) that ``what`` (save, load) uses: the
    given ``storage`` pointed at ``checkpoint_id``, or a new one there."""
    if storage is None:
        if checkpoint_id is None:
            raise RuntimeError(f"{what}: checkpoint_id must be given when {argument} is None")
        return cls(checkpoint_id)
    if not isinstance(storage, cls):
        raise TypeError(f"{what}: {argument} must be a {cls.__name__}, got "
                        f"{type(storage).__name__}")
    storage.reset(checkpoint_id)
    return storage
