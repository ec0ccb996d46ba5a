"""TensorBoard's event-file format written by hand: CRC32C, TFRecord framing, and the few
protobuf messages a SummaryWriter needs, so that logging needs neither tensorboard nor protobuf.

Field numbers are those of TensorBoard's published protos (github.com/tensorflow/tensorboard,
tensorboard/compat/proto/): event.proto (Event, SessionLog), summary.proto (Summary,
Summary.Value, Summary.Image, SummaryMetadata), histogram.proto (HistogramProto), tensor.proto
(TensorProto), tensor_shape.proto (TensorShapeProto), types.proto (DataType), and of the hparams
plugin's api.proto / plugin_data.proto with google/protobuf/struct.proto (Value, ListValue).
"""
from __future__ import annotations

import functools
import struct

import numpy as np

# ---- CRC32C (Castagnoli), as TFRecord frames use it ------------------------------------------
_CRC32C_POLY = 0x82F63B78  # 0x1EDC6F41 bit-reversed: the table runs least significant bit first


@functools.lru_cache(maxsize=1)
def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ _CRC32C_POLY if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of ``data`` (continuing from ``crc``, the CRC of the bytes before it)."""
    table = _crc32c_table()
    crc ^= 0xFFFFFFFF
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    # TFRecord stores the CRC rotated and offset, so that a CRC of data holding CRCs stays robust
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def tfrecord(data: bytes) -> bytes:
    """One TFRecord: uint64 length, masked CRC of the length, the data, masked CRC of the data."""
    length = struct.pack("<Q", len(data))
    return (length + struct.pack("<I", masked_crc32c(length)) + data
            + struct.pack("<I", masked_crc32c(data)))


# ---- protobuf wire format ----------------------------------------------------------------------
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


def varint(value: int) -> bytes:
    value = int(value)
    if value < 0:  # int32/int64 negatives are their 64-bit two's complement (ten bytes)
        value += 1 << 64
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def f_varint(field: int, value: int) -> bytes:
    return _key(field, _VARINT) + varint(value)


def f_double(field: int, value: float) -> bytes:
    return _key(field, _FIXED64) + struct.pack("<d", float(value))


def f_float(field: int, value: float) -> bytes:
    # through float32, so that values beyond its range become inf as in protobuf (struct refuses)
    with np.errstate(over="ignore"):
        return _key(field, _FIXED32) + np.float32(value).astype("<f4").tobytes()


def f_bytes(field: int, value: bytes | str) -> bytes:
    if isinstance(value, str):
        value = value.encode("utf-8")
    return _key(field, _BYTES) + varint(len(value)) + value


def f_packed_doubles(field: int, values) -> bytes:
    return f_bytes(field, np.asarray(values, dtype="<f8").tobytes())


def f_packed_floats(field: int, values) -> bytes:
    return f_bytes(field, np.asarray(values, dtype=np.float32).astype("<f4").tobytes())


# ---- the messages ------------------------------------------------------------------------------
FILE_VERSION = "brain.Event:2"
DT_FLOAT, DT_DOUBLE, DT_STRING = 1, 2, 7  # types.proto DataType


def event(wall_time: float, step: int | None = None, *, file_version: str | None = None,
          summary: bytes | None = None, session_log_status: int | None = None) -> bytes:
    """Event {1: wall_time double, 2: step int64, 3: file_version, 5: summary, 7: session_log}."""
    out = f_double(1, wall_time)
    if step is not None:
        out += f_varint(2, step)
    if file_version is not None:
        out += f_bytes(3, file_version)
    if summary is not None:
        out += f_bytes(5, summary)
    if session_log_status is not None:  # SessionLog {1: status}; START = 1
        out += f_bytes(7, f_varint(1, session_log_status))
    return out


def plugin_metadata(plugin_name: str, content: bytes = b"") -> bytes:
    """SummaryMetadata {1: PluginData {1: plugin_name, 2: content}}."""
    data = f_bytes(1, plugin_name) + (f_bytes(2, content) if content else b"")
    return f_bytes(1, data)


def summary_value(tag: str, *, simple_value: float | None = None, image: bytes | None = None,
                  histo: bytes | None = None, tensor: bytes | None = None,
                  metadata: bytes | None = None) -> bytes:
    """Summary.Value {1: tag, 2: simple_value float, 4: image, 5: histo, 8: tensor, 9: metadata}."""
    out = f_bytes(1, tag)
    if simple_value is not None:
        out += f_float(2, simple_value)
    if image is not None:
        out += f_bytes(4, image)
    if histo is not None:
        out += f_bytes(5, histo)
    if tensor is not None:
        out += f_bytes(8, tensor)
    if metadata is not None:
        out += f_bytes(9, metadata)
    return out


def summary(*values: bytes) -> bytes:
    """Summary {1: repeated Value}."""
    return b"".join(f_bytes(1, v) for v in values)


def image_proto(height: int, width: int, colorspace: int, png: bytes) -> bytes:
    """Summary.Image {1: height, 2: width, 3: colorspace, 4: encoded_image_string}."""
    return (f_varint(1, height) + f_varint(2, width) + f_varint(3, colorspace)
            + f_bytes(4, png))


def histogram_proto(min, max, num, sum, sum_squares, bucket_limit, bucket) -> bytes:
    """HistogramProto {1 min, 2 max, 3 num, 4 sum, 5 sum_squares: double; 6 bucket_limit,
    7 bucket: packed repeated double}."""
    return (f_double(1, min) + f_double(2, max) + f_double(3, num) + f_double(4, sum)
            + f_double(5, sum_squares) + f_packed_doubles(6, bucket_limit)
            + f_packed_doubles(7, bucket))


def tensor_shape(dims) -> bytes:
    """TensorShapeProto {2: repeated Dim {1: size int64}}."""
    return b"".join(f_bytes(2, f_varint(1, d)) for d in dims)


def tensor_proto(dtype: int, *, shape=(), float_val=None, double_val=None,
                 string_val=None) -> bytes:
    """TensorProto {1: dtype, 2: tensor_shape, 5: float_val packed, 6: double_val packed,
    8: repeated string_val bytes}."""
    out = f_varint(1, dtype)
    if shape:
        out += f_bytes(2, tensor_shape(shape))
    if float_val is not None:
        out += f_packed_floats(5, float_val)
    if double_val is not None:
        out += f_packed_doubles(6, double_val)
    for s in string_val or ():
        out += f_bytes(8, s)
    return out


# the hparams plugin (plugin_data.proto, api.proto) and google.protobuf.Value (struct.proto)
def struct_value(v) -> bytes:
    """google.protobuf.Value {2: number_value double, 3: string_value, 4: bool_value}."""
    if isinstance(v, bool):
        return f_varint(4, int(v))
    if isinstance(v, str):
        return f_bytes(3, v)
    return f_double(2, float(v))


def hparams_plugin_data(which: int, message: bytes) -> bytes:
    """HParamsPluginData {1: version (0, left out), 2: experiment, 3: session_start_info,
    4: session_end_info}."""
    return f_bytes(which, message)


# ---- the file ----------------------------------------------------------------------------------
_file_counter = 0


def next_file_counter() -> int:
    global _file_counter
    _file_counter += 1
    return _file_counter



HPARAMS_EXPERIMENT_TAG = "_hparams_/experiment"
HPARAMS_START_TAG = "_hparams_/session_start_info"
HPARAMS_END_TAG = "_hparams_/session_end_info"
