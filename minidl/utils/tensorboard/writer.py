"""``SummaryWriter``: PyTorch's ``torch.utils.tensorboard.SummaryWriter`` writing TensorBoard event
files itself (``_records``), without the tensorboard or protobuf packages."""
from __future__ import annotations

import atexit
import io
import numbers
import os
import socket
import time
import weakref

import numpy as np

from . import _records as rec


class _ShapeError(ValueError, AssertionError):
    """torch raises AssertionError for these; a ValueError is what a caller expects, so both."""


# ---- turning the caller's values into host numpy arrays -----------------------------------------
def _to_numpy(x, tag, what):
    if isinstance(x, np.ndarray):
        out = x
    elif isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{what} '{tag}': got {type(x).__name__} {x!r}, expected a number, "
                        "a numpy array or a Tensor")
    elif isinstance(x, (numbers.Number, np.generic)):
        out = np.asarray(x)
    elif hasattr(x, "detach") and hasattr(x, "cpu"):  # a torch.Tensor
        out = x.detach().cpu().float().numpy() if str(x.dtype) == "torch.bfloat16" \
            else x.detach().cpu().numpy()
    elif hasattr(x, "numpy") and hasattr(x, "device"):  # a minidl Tensor, on any device
        out = x.numpy()
    elif hasattr(x, "get") and hasattr(x, "__cuda_array_interface__"):  # a CuPy array
        out = x.get()
    else:
        try:
            out = np.asarray(x)
        except Exception as e:  # noqa: BLE001  (a ragged list and such: say what it was)
            raise TypeError(f"{what} '{tag}': cannot convert {type(x).__name__} to an array") \
                from e
    if out.dtype.kind not in "biuf":
        if out.dtype.kind == "V":
            out = out.astype(np.float32)  # ml_dtypes' bfloat16 and friends
        else:
            raise TypeError(f"{what} '{tag}': values of dtype {out.dtype} are not numbers")
    return out


def _scalar_value(tag, value):
    if isinstance(value, (str, bytes)) or value is None:
        raise TypeError(f"add_scalar '{tag}': scalar_value must be a number or a one-element "
                        f"Tensor, got {type(value).__name__} {value!r}")
    if hasattr(value, "item") and hasattr(value, "numel") and not isinstance(value, np.ndarray):
        if value.numel() != 1:  # minidl or torch Tensor: .item() copies one number off a GPU
            raise _ShapeError(f"add_scalar '{tag}': Tensor should contain one element, "
                              f"got shape {tuple(value.shape)}")
        value = value.item()
    arr = _to_numpy(value, tag, "add_scalar").squeeze()
    if arr.ndim != 0:
        raise _ShapeError(f"add_scalar '{tag}': Tensor should contain one element (0 dimensions), "
                          f"got {arr.size} elements of shape {arr.shape}")
    return float(arr)


# ---- images -------------------------------------------------------------------------------------
def _make_grid(nchw, ncols=8):
    """Tile N images (N, C, H, W), C of 1 or 3, row by row into ceil(N/8) x min(N, 8), as
    torch's tensorboard make_grid does (no padding; grey images become RGB)."""
    if nchw.shape[1] == 1:
        nchw = np.concatenate([nchw] * 3, axis=1)
    if nchw.shape[1] != 3:
        raise _ShapeError(f"a batch of images needs 1 or 3 channels, got shape {nchw.shape} "
                          "(N, C, H, W)")
    n, c, h, w = nchw.shape
    ncols = min(n, ncols)
    nrows = -(-n // ncols)
    canvas = np.zeros((c, h * nrows, w * ncols), dtype=nchw.dtype)
    for i in range(n):
        y, x = divmod(i, ncols)
        canvas[:, y * h:(y + 1) * h, x * w:(x + 1) * w] = nchw[i]
    return canvas


def _to_hwc(img, dataformats, tag):
    fmt = str(dataformats).upper()
    if len(set(fmt)) != len(fmt) or not set(fmt) <= set("NCHW") or not 2 <= len(fmt) <= 4 \
            or not {"H", "W"} <= set(fmt) or (len(fmt) == 4) != ("N" in fmt) \
            or (len(fmt) == 3 and "C" not in fmt):
        raise _ShapeError(f"image '{tag}': dataformats {dataformats!r} is not one of NCHW, NHWC, "
                          "CHW, HWC, HW, WH (each letter once)")
    if img.ndim != len(fmt):
        raise _ShapeError(f"image '{tag}': shape {img.shape} has {img.ndim} dimensions, "
                          f"dataformats {dataformats!r} has {len(fmt)}")
    if len(fmt) == 4:
        return _make_grid(img.transpose([fmt.index(c) for c in "NCHW"])).transpose(1, 2, 0)
    if len(fmt) == 3:
        hwc = img.transpose([fmt.index(c) for c in "HWC"])
        if hwc.shape[2] == 1:
            hwc = np.concatenate([hwc] * 3, axis=2)
        if hwc.shape[2] not in (3, 4):
            raise _ShapeError(f"image '{tag}': shape {img.shape} with dataformats "
                              f"{dataformats!r} has {hwc.shape[2]} channels; 1, 3 or 4 expected")
        return hwc
    hw = img.transpose([fmt.index(c) for c in "HW"])
    return np.stack([hw] * 3, axis=2)


def _image_proto(tag, img_tensor, dataformats):
    from PIL import Image

    img = _to_numpy(img_tensor, tag, "add_image")
    hwc = _to_hwc(img, dataformats, tag)
    # as torch: uint8 is taken as 0..255, anything else as 0..1 and scaled by 255
    scale = 1 if hwc.dtype == np.uint8 else 255
    pixels = np.nan_to_num(hwc.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)
    h, w, c = pixels.shape
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(pixels)).save(buf, format="PNG")
    return rec.image_proto(h, w, c, buf.getvalue())


# ---- histograms ---------------------------------------------------------------------------------
def _tensorflow_bins():
    """TensorFlow's default buckets as torch builds them: 1e-12 growing by 1.1 while below 1e20,
    mirrored onto the negatives, with 0 in the middle."""
    v, pos = 1e-12, []
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return [-b for b in reversed(pos)] + [0.0] + pos


def _histogram_proto(tag, values, bins, max_bins=None):
    values = _to_numpy(values, tag, "add_histogram").astype(np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError(f"add_histogram '{tag}': the input has no element")
    if not np.isfinite(values).all():
        raise ValueError(f"add_histogram '{tag}': values contain NaN or infinity")
    counts, limits = np.histogram(values, bins=bins)
    if max_bins is not None and len(counts) > max_bins:
        group = len(counts) // max_bins  # merge neighbouring bins, padding the last group
        counts = np.pad(counts, (0, (-len(counts)) % group)).reshape(-1, group).sum(axis=1)
        limits = np.concatenate([limits[:-1:group], limits[-1:]])
    nonzero = np.flatnonzero(counts)
    if nonzero.size == 0:  # every value outside the bins
        first, last = 0, len(counts) - 1
    else:
        first, last = int(nonzero[0]), int(nonzero[-1])
    # TensorBoard keeps only right edges: one bin before the first filled one carries the left
    # edge (an empty one when the first bin is filled), and the empty tail is dropped
    if first > 0:
        counts = counts[first - 1:last + 1]
    else:
        counts = np.concatenate([[0], counts[:last + 1]])
    limits = limits[first:last + 2]
    return rec.histogram_proto(values.min(), values.max(), values.size, values.sum(),
                               values.dot(values), limits, counts)


def _check_log_dir(log_dir):
    if os.path.exists(log_dir) and not os.path.isdir(log_dir):
        raise NotADirectoryError(f"SummaryWriter: log_dir '{log_dir}' exists and is not a "
                                 "directory")


# ---- one event file -----------------------------------------------------------------------------
class FileWriter:
    """One event file in ``log_dir``: records queue in memory and are appended whole, with a
    flush, when ``max_queue`` are waiting, ``flush_secs`` have passed since the last write (checked
    on each add), on ``flush()``/``close()`` and at interpreter exit."""

    def __init__(self, log_dir, max_queue=10, flush_secs=120, filename_suffix=""):
        log_dir = str(log_dir)
        _check_log_dir(log_dir)
        os.makedirs(log_dir, exist_ok=True)
        self._log_dir = log_dir
        self._max_queue = max(int(max_queue), 1)
        self._flush_secs = flush_secs
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.{rec.next_file_counter()}{filename_suffix}")
        self.path = os.path.join(log_dir, name)
        self._file = open(self.path, "ab")
        self._queue = []
        self._last_flush = time.time()
        self.add_event(rec.event(time.time(), file_version=rec.FILE_VERSION))
        self.flush()
        ref = weakref.ref(self)
        self._atexit = lambda: ref() is not None and ref().close()
        atexit.register(self._atexit)

    def get_logdir(self):
        return self._log_dir

    def add_event(self, event: bytes):
        if self._file is None:
            raise RuntimeError(f"event file {self.path} is closed")
        self._queue.append(rec.tfrecord(event))
        if len(self._queue) >= self._max_queue or \
                time.time() - self._last_flush >= self._flush_secs:
            self.flush()

    def add_summary(self, summary: bytes, global_step=None, walltime=None):
        wall_time = time.time() if walltime is None else float(walltime)
        step = None if global_step is None else int(global_step)
        self.add_event(rec.event(wall_time, step, summary=summary))

    def flush(self):
        if self._file is None:
            return
        if self._queue:
            self._file.write(b"".join(self._queue))
            self._queue = []
        self._file.flush()
        self._last_flush = time.time()

    def close(self):
        if self._file is None:
            return
        self.flush()
        self._file.close()
        self._file = None
        atexit.unregister(self._atexit)

    def __del__(self):  # a writer dropped without close() still writes what it queued
        try:
            self.close()
        except Exception:  # noqa: BLE001  (interpreter shutdown: nothing left to report to)
            pass


# ---- the public writer --------------------------------------------------------------------------
class SummaryWriter:
    """Writes TensorBoard event files into ``log_dir`` (default ``runs/<date>_<host><comment>``),
    with torch's methods and arguments; open the directory with ``tensorboard --logdir runs``."""

    def __init__(self, log_dir=None, comment="", purge_step=None, max_queue=10, flush_secs=120,
                 filename_suffix=""):
        if not log_dir:
            from datetime import datetime

            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", stamp + "_" + socket.gethostname() + comment)
        self.log_dir = log_dir  # returned as given (a Path stays a Path), as torch
        _check_log_dir(str(log_dir))  # before anything is created
        self.purge_step = purge_step
        self.max_queue = max_queue
        self.flush_secs = flush_secs
        self.filename_suffix = filename_suffix
        self.file_writer = self.all_writers = None
        self._get_file_writer()
        self.default_bins = _tensorflow_bins()

    def _get_file_writer(self):
        """The default FileWriter; a new one (a new event file) after close()."""
        if self.all_writers is None or self.file_writer is None:
            self.file_writer = FileWriter(self.log_dir, self.max_queue, self.flush_secs,
                                          self.filename_suffix)
            self.all_writers = {self.file_writer.get_logdir(): self.file_writer}
            if self.purge_step is not None:
                # TensorBoard drops the events of steps >= purge_step written before this one
                now, step = time.time(), int(self.purge_step)
                self.file_writer.add_event(rec.event(now, step, file_version=rec.FILE_VERSION))
                self.file_writer.add_event(rec.event(now, step, session_log_status=1))  # START
                self.purge_step = None
        return self.file_writer

    def get_logdir(self):
        return self.log_dir

    # -- scalars --
    def add_scalar(self, tag, scalar_value, global_step=None, walltime=None, new_style=False,
                   double_precision=False):
        value = _scalar_value(tag, scalar_value)
        if new_style:
            tensor = (rec.tensor_proto(rec.DT_DOUBLE, double_val=[value]) if double_precision
                      else rec.tensor_proto(rec.DT_FLOAT, float_val=[value]))
            summary = rec.summary(rec.summary_value(
                tag, tensor=tensor, metadata=rec.plugin_metadata("scalars")))
        else:
            summary = rec.summary(rec.summary_value(tag, simple_value=value))
        self._get_file_writer().add_summary(summary, global_step, walltime)

    def add_scalars(self, main_tag, tag_scalar_dict, global_step=None, walltime=None):
        """Each value goes to its own run, ``<log_dir>/<main_tag>_<tag>``, under ``main_tag``."""
        walltime = time.time() if walltime is None else walltime
        values = {tag: _scalar_value(f"{main_tag}/{tag}", v) for tag, v in tag_scalar_dict.items()}
        fw_logdir = self._get_file_writer().get_logdir()
        for tag, value in values.items():
            fw_tag = fw_logdir + "/" + main_tag.replace("/", "_") + "_" + tag
            fw = self.all_writers.get(fw_tag)
            if fw is None:
                fw = FileWriter(fw_tag, self.max_queue, self.flush_secs, self.filename_suffix)
                self.all_writers[fw_tag] = fw
            fw.add_summary(rec.summary(rec.summary_value(main_tag, simple_value=value)),
                           global_step, walltime)

    # -- histograms --
    def add_histogram(self, tag, values, global_step=None, bins="tensorflow", walltime=None,
                      max_bins=None):
        if isinstance(bins, str) and bins == "tensorflow":
            bins = self.default_bins
        self._get_file_writer().add_summary(
            rec.summary(rec.summary_value(tag, histo=_histogram_proto(tag, values, bins,
                                                                      max_bins))),
            global_step, walltime)

    def add_histogram_raw(self, tag, min, max, num, sum, sum_squares, bucket_limits,
                          bucket_counts, global_step=None, walltime=None):
        if len(bucket_limits) != len(bucket_counts):
            raise ValueError(f"add_histogram_raw '{tag}': len(bucket_limits) "
                             f"{len(bucket_limits)} != len(bucket_counts) {len(bucket_counts)}")
        histo = rec.histogram_proto(min, max, num, sum, sum_squares,
                                    _to_numpy(bucket_limits, tag, "add_histogram_raw"),
                                    _to_numpy(bucket_counts, tag, "add_histogram_raw"))
        self._get_file_writer().add_summary(rec.summary(rec.summary_value(tag, histo=histo)),
                                            global_step, walltime)

    # -- images --
    def add_image(self, tag, img_tensor, global_step=None, walltime=None, dataformats="CHW"):
        image = _image_proto(tag, img_tensor, dataformats)
        self._get_file_writer().add_summary(rec.summary(rec.summary_value(tag, image=image)),
                                            global_step, walltime)

    def add_images(self, tag, img_tensor, global_step=None, walltime=None, dataformats="NCHW"):
        """A batch of images tiled into one, 8 to a row."""
        self.add_image(tag, img_tensor, global_step, walltime, dataformats)

    # -- text --
    def add_text(self, tag, text_string, global_step=None, walltime=None):
        if not isinstance(text_string, str):
            raise TypeError(f"add_text '{tag}': text_string must be a str, got "
                            f"{type(text_string).__name__}")
        # the text plugin reads a rank-1 DT_STRING tensor; its content (TextPluginData, version
        # 0) serialises to nothing
        tensor = rec.tensor_proto(rec.DT_STRING, shape=(1,),
                                  string_val=[text_string.encode("utf-8")])
        self._get_file_writer().add_summary(
            rec.summary(rec.summary_value(tag + "/text_summary", tensor=tensor,
                                          metadata=rec.plugin_metadata("text"))),
            global_step, walltime)

    # -- hyperparameters --
    def add_hparams(self, hparam_dict, metric_dict, hparam_domain_discrete=None, run_name=None,
                    global_step=None):
        """The hparams plugin's three summaries and the metrics, in ``<log_dir>/<run_name>``."""
        if type(hparam_dict) is not dict or type(metric_dict) is not dict:
            raise TypeError("hparam_dict and metric_dict should be dictionary.")
        hparam_domain_discrete = hparam_domain_discrete or {}
        if not isinstance(hparam_domain_discrete, dict):
            raise TypeError("parameter: hparam_domain_discrete should be a dictionary, nothing "
                            "logged.")
        for k, v in hparam_domain_discrete.items():
            if k not in hparam_dict or not isinstance(v, list) or \
                    not all(isinstance(d, type(hparam_dict[k])) for d in v):
                raise TypeError(f"parameter: hparam_domain_discrete[{k}] should be a list of same "
                                f"type as hparam_dict[{k}].")
        infos, start = [], b""
        for k, v in hparam_dict.items():
            if v is None:
                continue
            if isinstance(v, bool):
                kind = 2  # DATA_TYPE_BOOL
            elif isinstance(v, str):
                kind = 1  # DATA_TYPE_STRING
            elif isinstance(v, numbers.Real):
                kind = 3  # DATA_TYPE_FLOAT64
            elif hasattr(v, "numel") and hasattr(v, "item"):
                v, kind = float(v.reshape(-1)[0].item()), 3
            else:
                raise ValueError(f"add_hparams: value of '{k}' should be one of int, float, str, "
                                 f"bool, or Tensor, got {type(v).__name__}")
            # SessionStartInfo.hparams is a map: entries {1: key, 2: google.protobuf.Value}
            start += rec.f_bytes(1, rec.f_bytes(1, k) + rec.f_bytes(2, rec.struct_value(v)))
            info = rec.f_bytes(1, k) + rec.f_varint(4, kind)  # HParamInfo {1 name, 4 type}
            if k in hparam_domain_discrete:  # 5: domain_discrete ListValue {1: repeated Value}
                info += rec.f_bytes(5, b"".join(rec.f_bytes(1, rec.struct_value(d))
                                                for d in hparam_domain_discrete[k]))
            infos.append(info)
        # Experiment {4: hparam_infos, 5: metric_infos (MetricInfo {1: MetricName {2: tag}})}
        experiment = b"".join(rec.f_bytes(4, i) for i in infos) + b"".join(
            rec.f_bytes(5, rec.f_bytes(1, rec.f_bytes(2, k))) for k in metric_dict)
        end = rec.f_varint(1, 1)  # SessionEndInfo {1: status STATUS_SUCCESS}
        summaries = [(rec.HPARAMS_EXPERIMENT_TAG, rec.hparams_plugin_data(2, experiment)),
                     (rec.HPARAMS_START_TAG, rec.hparams_plugin_data(3, start)),
                     (rec.HPARAMS_END_TAG, rec.hparams_plugin_data(4, end))]
        if not run_name:
            run_name = str(time.time())
        logdir = os.path.join(self._get_file_writer().get_logdir(), run_name)
        with SummaryWriter(log_dir=logdir) as w_hp:
            for tag, content in summaries:
                w_hp.file_writer.add_summary(rec.summary(rec.summary_value(
                    tag, metadata=rec.plugin_metadata("hparams", content))), global_step)
            for k, v in metric_dict.items():
                w_hp.add_scalar(k, v, global_step)

    # -- what this writer does not write --
    def _unsupported(self, what):
        raise NotImplementedError(f"minidl's SummaryWriter does not write {what}; it writes "
                                  "scalars, histograms, images, text and hparams")

    def add_graph(self, *args, **kwargs):
        self._unsupported("graphs")

    def add_embedding(self, *args, **kwargs):
        self._unsupported("embeddings")

    def add_figure(self, *args, **kwargs):
        self._unsupported("matplotlib figures")

    def add_video(self, *args, **kwargs):
        self._unsupported("videos")

    def add_audio(self, *args, **kwargs):
        self._unsupported("audio")

    def add_pr_curve(self, *args, **kwargs):
        self._unsupported("PR curves")

    def add_mesh(self, *args, **kwargs):
        self._unsupported("meshes")

    # -- lifetime --
    def flush(self):
        if self.all_writers is None:
            return
        for writer in self.all_writers.values():
            writer.flush()

    def close(self):
        if self.all_writers is None:
            return
        for writer in self.all_writers.values():
            writer.close()
        self.file_writer = self.all_writers = None

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.close()
