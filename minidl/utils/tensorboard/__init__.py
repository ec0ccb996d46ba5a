"""``minidl.utils.tensorboard.SummaryWriter``: torch's TensorBoard logger, writing the event files
itself (TFRecord framing, CRC32C and the protobuf messages by hand: ``_records``), so neither the
tensorboard nor the protobuf package is needed to log; TensorBoard reads the files."""
from .writer import SummaryWriter

__all__ = ["SummaryWriter"]
