"""minidl.utils.tensorboard.SummaryWriter, read back by a reader written here independently of the
writer: TFRecord frames with both CRCs checked (a bitwise CRC32C, not the writer's table), and
protobuf decoded generically into (field, wire type, value) tuples, then interpreted with the
field numbers of TensorBoard's event.proto, summary.proto, histogram.proto and tensor.proto."""
import io
import os
import struct

import numpy as np
import pytest
from PIL import Image

import minidl
from minidl.utils.tensorboard import SummaryWriter
from minidl.utils.tensorboard._records import crc32c


# ---- the independent reader ---------------------------------------------------------------------
def _crc32c_bitwise(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 * (crc & 1))
    return crc ^ 0xFFFFFFFF


def _masked(data):
    crc = _crc32c_bitwise(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) % (1 << 32)


class CorruptRecord(Exception):
    pass


def read_records(path):
    """The data of each TFRecord in ``path``; CorruptRecord on a CRC mismatch or truncation."""
    with open(path, "rb") as f:
        blob = f.read()
    out, pos = [], 0
    while pos < len(blob):
        if pos + 12 > len(blob):
            raise CorruptRecord(f"truncated header at {pos}")
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if length_crc != _masked(header):
            raise CorruptRecord(f"length CRC mismatch at {pos}")
        data = blob[pos + 12:pos + 12 + length]
        if len(data) != length or pos + 16 + length > len(blob):
            raise CorruptRecord(f"truncated record at {pos}")
        (data_crc,) = struct.unpack("<I", blob[pos + 12 + length:pos + 16 + length])
        if data_crc != _masked(data):
            raise CorruptRecord(f"data CRC mismatch at {pos}")
        out.append(data)
        pos += 16 + length
    return out


def _read_varint(buf, pos):
    shift = value = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def decode(buf):
    """A protobuf message as a list of (field, wire type, raw value): int for varints, bytes for
    fixed32/fixed64 and length-delimited fields."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _read_varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _read_varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        elif wire == 2:
            n, pos = _read_varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        else:
            raise AssertionError(f"wire type {wire}")
        fields.append((field, wire, value))
    return fields


def one(fields, number, wire=None):
    found = [v for f, w, v in fields if f == number and (wire is None or w == wire)]
    assert len(found) == 1, (number, fields)
    return found[0]


def many(fields, number):
    return [v for f, _, v in fields if f == number]


def double(b):
    return struct.unpack("<d", b)[0]


def parse_event(data):
    """{wall_time, step, file_version, values: [Summary.Value fields], session_log}"""
    fields = decode(data)
    ev = {"wall_time": double(one(fields, 1, 1)),
          "step": many(fields, 2)[0] if many(fields, 2) else None,
          "file_version": many(fields, 3)[0].decode() if many(fields, 3) else None,
          "values": [], "session_log": many(fields, 7)}
    if ev["step"] is not None and ev["step"] >= 1 << 63:
        ev["step"] -= 1 << 64
    for summary in many(fields, 5):
        ev["values"] += [decode(v) for v in many(decode(summary), 1)]
    return ev


def events_in(log_dir):
    files = sorted(f for f in os.listdir(log_dir) if f.startswith("events.out.tfevents."))
    assert len(files) == 1, files
    return [parse_event(r) for r in read_records(os.path.join(log_dir, files[0]))]


def values(log_dir):
    """(tag, step, wall_time, Summary.Value fields) of every summary value."""
    return [(one(v, 1).decode(), ev["step"], ev["wall_time"], v)
            for ev in events_in(log_dir) for v in ev["values"]]


# ---- CRC and framing -----------------------------------------------------------------------------
def test_crc32c_known_vectors():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(bytes(32)) == 0x8A9136AA  # iSCSI (RFC 3720) vectors
    assert crc32c(b"\xff" * 32) == 0x62A8AB43
    assert crc32c(bytes(range(32))) == 0x46DD794E
    assert crc32c(b"") == 0
    data = bytes(np.random.default_rng(0).integers(0, 256, 300, dtype=np.uint8))
    assert crc32c(data) == _crc32c_bitwise(data)
    assert crc32c(data[100:], crc32c(data[:100])) == crc32c(data)


def test_first_record_is_the_file_version_and_the_file_name(tmp_path):
    w = SummaryWriter(tmp_path, filename_suffix=".x")
    w.close()
    (name,) = os.listdir(tmp_path)
    parts = name.split(".")
    assert name.startswith("events.out.tfevents.") and name.endswith(".x")
    assert int(parts[3]) > 1_600_000_000 and parts[-3] == str(os.getpid())
    (ev,) = events_in(tmp_path)
    assert ev["file_version"] == "brain.Event:2" and ev["values"] == []
    assert abs(ev["wall_time"] - int(parts[3])) < 5


def test_a_corrupted_or_truncated_record_is_detected_and_earlier_ones_survive(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for i in range(3):
            w.add_scalar("loss", float(i), i)
    (name,) = os.listdir(tmp_path)
    path = tmp_path / name
    blob = path.read_bytes()
    assert len(read_records(path)) == 4
    for where in (5, len(blob) - 10, len(blob) - 2):  # length, data, data CRC
        bad = bytearray(blob)
        bad[where] ^= 0x10
        path.write_bytes(bytes(bad))
        with pytest.raises(CorruptRecord):
            read_records(path)
    path.write_bytes(blob[:-7])  # a crash in the middle of the last record's write
    with pytest.raises(CorruptRecord, match="truncated"):
        read_records(path)
    prefix = blob[:len(blob) - 7]
    # the records before the torn one still parse
    n, pos = 0, 0
    while pos + 16 <= len(prefix):
        (length,) = struct.unpack("<Q", prefix[pos:pos + 8])
        if pos + 16 + length > len(prefix):
            break
        n += 1
        pos += 16 + length
    assert n == 3


# ---- scalars -------------------------------------------------------------------------------------
def test_scalars_tag_step_value_wall_time(tmp_path):
    t = minidl.tensor(2.5)
    with SummaryWriter(tmp_path) as w:
        w.add_scalar("loss", 0.125, 0, walltime=1000.5)
        w.add_scalar("loss", np.float32(0.25), 1, walltime=1001.0)
        w.add_scalar("train/acc", t, np.int64(7), walltime=1002.0)
        w.add_scalar("one", minidl.tensor([[3.0]]), 8, walltime=1003.0)
        w.add_scalar("int", 3, -2, walltime=1004.0)
        w.add_scalar("nan", float("nan"), 9, walltime=1005.0)  # torch writes NaN too
        w.add_scalar("big", 1e300, 10, walltime=1006.0)  # beyond float32: inf, as protobuf
        w.add_scalar("now", 1.0)
    got = values(tmp_path)
    simple = [(tag, step, wt, struct.unpack("<f", one(v, 2, 5))[0]) for tag, step, wt, v in got]
    assert simple[:5] == [("loss", 0, 1000.5, 0.125), ("loss", 1, 1001.0, 0.25),
                          ("train/acc", 7, 1002.0, 2.5), ("one", 8, 1003.0, 3.0),
                          ("int", -2, 1004.0, 3.0)]
    assert np.isnan(simple[5][3]) and simple[6][3] == np.inf
    import time
    assert simple[7][1] is None and abs(simple[7][2] - time.time()) < 60


def test_new_style_scalars(tmp_path):
    with SummaryWriter(tmp_path) as w:
        w.add_scalar("f", 1.5, 1, new_style=True)
        w.add_scalar("d", 1 / 3, 2, new_style=True, double_precision=True)
    (_, _, _, f), (_, _, _, d) = values(tmp_path)
    assert one(decode(one(decode(one(f, 9)), 1)), 1) == b"scalars"
    tf = decode(one(f, 8))
    assert one(tf, 1) == 1 and struct.unpack("<f", one(tf, 5)) == (1.5,)
    td = decode(one(d, 8))
    assert one(td, 1) == 2 and double(one(td, 6)) == 1 / 3


def test_bad_scalars_name_the_tag(tmp_path):
    with SummaryWriter(tmp_path) as w:
        with pytest.raises(TypeError, match="'loss'"):
            w.add_scalar("loss", "0.5")
        with pytest.raises(TypeError, match="'loss'"):
            w.add_scalar("loss", None)
        with pytest.raises(ValueError, match="'acc'.*one element"):
            w.add_scalar("acc", minidl.tensor([1.0, 2.0]))
        with pytest.raises(AssertionError):  # what torch raises, kept for except clauses
            w.add_scalar("acc", np.zeros(3))
        with pytest.raises(TypeError, match="'m/b'"):
            w.add_scalars("m", {"a": 1.0, "b": "x"})
    assert values(tmp_path) == []
    assert sorted(os.listdir(tmp_path)) == [n for n in os.listdir(tmp_path)
                                            if n.startswith("events")]  # no m_a run made


def test_add_scalars_writes_one_run_per_tag(tmp_path):
    with SummaryWriter(tmp_path) as w:
        for step in range(3):
            w.add_scalars("run/14h", {"xsinx": step * 1.0, "xcosx": -step * 1.0}, step)
        w.add_scalar("plain", 1.0, 0)
    assert sorted(d for d in os.listdir(tmp_path) if os.path.isdir(tmp_path / d)) == \
        ["run_14h_xcosx", "run_14h_xsinx"]
    for sub, sign in (("run_14h_xsinx", 1), ("run_14h_xcosx", -1)):
        got = values(tmp_path / sub)
        assert [(tag, step) for tag, step, _, _ in got] == [("run/14h", s) for s in range(3)]
        assert [struct.unpack("<f", one(v, 2))[0] for *_, v in got] == [sign * s for s in
                                                                         (0.0, 1.0, 2.0)]
    assert [tag for tag, *_ in values(tmp_path)] == ["plain"]


# ---- histograms ----------------------------------------------------------------------------------
def _tf_default_edges():
    edges, v = [], 1e-12
    while v < 1e20:
        edges.append(v)
        v *= 1.1
    return np.array([-e for e in edges[::-1]] + [0.0] + edges)


def _histo(v):
    h = decode(one(v, 5))
    limits = np.frombuffer(one(h, 6), "<f8")
    counts = np.frombuffer(one(h, 7), "<f8")
    stats = [double(one(h, i)) for i in range(1, 6)]
    return stats, limits, counts


@pytest.mark.parametrize("bins", ["tensorflow", 10, "auto", "fd"])
def test_histogram_counts_match_numpy(tmp_path, bins):
    data = np.random.default_rng(0).standard_normal((20, 30)).astype(np.float32) * 3 + 1
    with SummaryWriter(tmp_path) as w:
        w.add_histogram("w", minidl.tensor(data), 5, bins=bins)
    ((tag, step, _, v),) = values(tmp_path)
    assert (tag, step) == ("w", 5)
    (lo, hi, num, total, sq), limits, counts = _histo(v)
    flat = data.astype(np.float64).ravel()
    assert (lo, hi, num) == (flat.min(), flat.max(), flat.size)
    assert total == pytest.approx(flat.sum()) and sq == pytest.approx(flat @ flat)
    assert np.all(np.diff(limits) > 0) and counts.sum() == flat.size
    edges = _tf_default_edges() if bins == "tensorflow" else np.histogram_bin_edges(flat, bins)
    ref, _ = np.histogram(flat, edges)
    # each written bucket is the numpy bin whose right edge is its limit (an empty one first)
    for limit, count in zip(limits, counts):
        j = int(np.flatnonzero(edges == limit)[0])
        assert count == (ref[j - 1] if j > 0 else 0)
    assert counts[0] == 0 and counts[-1] > 0
    if bins == "tensorflow":
        assert len(edges) == 2 * 774 + 1 and limits[0] < lo <= hi <= limits[-1]


def test_histogram_max_bins_and_errors(tmp_path):
    data = np.arange(100, dtype=np.float64)
    with SummaryWriter(tmp_path) as w:
        w.add_histogram("m", data, 0, bins=40, max_bins=10)
        with pytest.raises(ValueError, match="'e'.*no element"):
            w.add_histogram("e", np.zeros(0))
        with pytest.raises(ValueError, match="'n'.*NaN"):
            w.add_histogram("n", np.array([1.0, np.nan]))
    ((_, _, _, v),) = values(tmp_path)
    _, limits, counts = _histo(v)
    assert counts.sum() == 100 and len(counts) <= 11 and np.all(np.diff(limits) > 0)


# ---- images --------------------------------------------------------------------------------------
def _png(v):
    img = decode(one(v, 4))
    h, w, c = one(img, 1), one(img, 2), one(img, 3)
    pixels = np.asarray(Image.open(io.BytesIO(one(img, 4))))
    assert pixels.shape == (h, w, c)
    return pixels


def test_images_decode_to_the_right_pixels(tmp_path):
    rng = np.random.default_rng(0)
    chw = rng.random((3, 5, 7)).astype(np.float32)
    hwc_u8 = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
    hw = rng.random((5, 4))
    rgba = rng.random((4, 3, 4))
    with SummaryWriter(tmp_path) as w:
        w.add_image("chw", minidl.tensor(chw), 1)
        w.add_image("hwc", hwc_u8, 2, dataformats="HWC")
        w.add_image("hw", hw, 3, dataformats="HW")
        w.add_image("rgba", rgba, 4, dataformats="HWC")
        w.add_image("clip", np.array([[[-1.0, 0.5, 2.0]]]), 5, dataformats="CHW")
    got = {tag: _png(v) for tag, _, _, v in values(tmp_path)}
    np.testing.assert_array_equal(got["chw"], (chw * 255).astype(np.uint8).transpose(1, 2, 0))
    np.testing.assert_array_equal(got["hwc"], hwc_u8)
    np.testing.assert_array_equal(got["hw"], np.stack([(hw * 255).astype(np.uint8)] * 3, 2))
    np.testing.assert_array_equal(got["rgba"], (rgba * 255).astype(np.uint8))
    assert got["clip"].shape == (1, 3, 3)
    np.testing.assert_array_equal(got["clip"][0, :, 0], [0, 127, 255])


def test_add_images_tiles_eight_to_a_row(tmp_path):
    batch = np.stack([np.full((1, 2, 3), i, np.uint8) * 20 for i in range(10)])  # N1HW
    with SummaryWriter(tmp_path) as w:
        w.add_images("grid", batch, 0)
        w.add_images("nhwc", batch.transpose(0, 2, 3, 1), 1, dataformats="NHWC")
    (_, _, _, v), (_, _, _, v2) = values(tmp_path)
    grid = _png(v)
    assert grid.shape == (4, 24, 3)  # 2 rows of 8 tiles of 2 x 3
    for i in range(10):
        r, c = divmod(i, 8)
        assert np.all(grid[2 * r:2 * r + 2, 3 * c:3 * c + 3] == 20 * i)
    assert np.all(grid[2:, 6:] == 0)  # the empty slots
    np.testing.assert_array_equal(_png(v2), grid)


def test_bad_images_name_shape_and_dataformats(tmp_path):
    with SummaryWriter(tmp_path) as w:
        with pytest.raises(ValueError, match=r"'x'.*\(3, 4\).*'CHW'"):
            w.add_image("x", np.zeros((3, 4)))
        with pytest.raises(ValueError, match="2 channels"):
            w.add_image("x", np.zeros((2, 4, 4)))
        with pytest.raises(ValueError, match="each letter once"):
            w.add_image("x", np.zeros((4, 4, 4)), dataformats="HHW")
        with pytest.raises(ValueError, match="1 or 3 channels"):
            w.add_images("x", np.zeros((2, 4, 5, 5)))
        with pytest.raises(TypeError, match="'x'"):
            w.add_image("x", "not an image")
    assert values(tmp_path) == []


# ---- text, hparams -------------------------------------------------------------------------------
def test_text_is_the_text_plugins_string_tensor(tmp_path):
    with SummaryWriter(tmp_path) as w:
        w.add_text("notes", "héllo **world**", 3)
        with pytest.raises(TypeError, match="'notes'"):
            w.add_text("notes", 3)
    ((tag, step, _, v),) = values(tmp_path)
    assert (tag, step) == ("notes/text_summary", 3)
    plugin = decode(one(decode(one(v, 9)), 1))
    assert one(plugin, 1) == b"text"
    tensor = decode(one(v, 8))
    assert one(tensor, 1) == 7  # DT_STRING
    assert [one(decode(d), 1) for d in many(decode(one(tensor, 2)), 2)] == [1]
    assert one(tensor, 8).decode("utf-8") == "héllo **world**"


def test_hparams_run(tmp_path):
    with SummaryWriter(tmp_path) as w:
        w.add_hparams({"lr": 0.1, "opt": "sgd", "bn": True, "skip": None}, {"hp/acc": 0.9},
                      run_name="r1")
        with pytest.raises(TypeError):
            w.add_hparams([("lr", 0.1)], {})
    got = values(tmp_path / "r1")
    tags = [tag for tag, *_ in got]
    assert tags == ["_hparams_/experiment", "_hparams_/session_start_info",
                    "_hparams_/session_end_info", "hp/acc"]
    plugin = decode(one(decode(one(got[1][3], 9)), 1))
    assert one(plugin, 1) == b"hparams"
    start = decode(one(decode(one(plugin, 2)), 3))
    entries = {one(decode(e), 1).decode(): decode(one(decode(e), 2)) for e in many(start, 1)}
    assert double(one(entries["lr"], 2)) == 0.1 and one(entries["opt"], 3) == b"sgd"
    assert one(entries["bn"], 4) == 1 and "skip" not in entries
    assert struct.unpack("<f", one(got[3][3], 2))[0] == pytest.approx(0.9)


# ---- the writer's life ---------------------------------------------------------------------------
def test_buffering_flush_close_and_reopen(tmp_path):
    w = SummaryWriter(tmp_path, max_queue=3, flush_secs=1e9)
    (name,) = os.listdir(tmp_path)
    w.add_scalar("a", 1.0, 0)
    w.add_scalar("a", 2.0, 1)
    assert len(read_records(tmp_path / name)) == 1  # only the file version so far
    w.add_scalar("a", 3.0, 2)  # the queue is full
    assert len(read_records(tmp_path / name)) == 4
    w.add_scalar("a", 4.0, 3)
    w.flush()
    assert len(read_records(tmp_path / name)) == 5
    w.close()
    w.close()  # twice is fine
    w.add_scalar("a", 5.0, 4)  # a new event file, as torch
    w.close()
    assert len(os.listdir(tmp_path)) == 2
    w2 = SummaryWriter(tmp_path / "b", flush_secs=0)
    w2.add_scalar("x", 1.0)
    (name2,) = os.listdir(tmp_path / "b")
    assert len(read_records(tmp_path / "b" / name2)) == 2  # flush_secs elapsed: written
    w2.close()


def test_purge_step_event(tmp_path):
    with SummaryWriter(tmp_path, purge_step=42) as w:
        w.add_scalar("a", 1.0, 42)
    evs = events_in(tmp_path)
    assert evs[0]["file_version"] == "brain.Event:2" and evs[0]["step"] is None
    assert evs[1]["file_version"] == "brain.Event:2" and evs[1]["step"] == 42
    assert evs[2]["step"] == 42 and one(decode(evs[2]["session_log"][0]), 1) == 1  # START
    assert evs[3]["step"] == 42 and len(evs[3]["values"]) == 1


def test_default_log_dir_and_get_logdir(tmp_path, monkeypatch):
    import socket
    monkeypatch.chdir(tmp_path)
    with SummaryWriter(comment="_lr0.1") as w:
        logdir = w.get_logdir()
    assert logdir.startswith("runs" + os.sep) and logdir.endswith(socket.gethostname() + "_lr0.1")
    assert os.path.isdir(tmp_path / logdir)


def test_log_dir_that_is_a_file_fails_before_writing(tmp_path):
    path = tmp_path / "taken"
    path.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="taken"):
        SummaryWriter(path)
    assert path.read_text() == "keep me" and os.listdir(tmp_path) == ["taken"]
    with SummaryWriter(tmp_path / "w") as w:
        (tmp_path / "w" / "m_a").write_text("")
        with pytest.raises(NotADirectoryError, match="m_a"):
            w.add_scalars("m", {"a": 1.0})


def test_unsupported_summaries_say_so(tmp_path):
    with SummaryWriter(tmp_path) as w:
        with pytest.raises(NotImplementedError, match="graphs"):
            w.add_graph(None)


# ---- devices and torch ---------------------------------------------------------------------------
def test_values_from_the_fake_gpu(tmp_path, monkeypatch):
    import _fake_gpu
    _fake_gpu.install(monkeypatch, None)
    loss = minidl.tensor(0.75, device="cuda")
    img = minidl.tensor(np.full((1, 2, 2), 0.5, np.float32), device="cuda")
    assert "cuda" in str(loss.device) and "cuda" in str(img.device)
    with SummaryWriter(tmp_path) as w:
        w.add_scalar("loss", loss, 1)
        w.add_histogram("h", img, 1, bins=4)
        w.add_image("img", img, 1)
    got = values(tmp_path)
    assert struct.unpack("<f", one(got[0][3], 2))[0] == 0.75
    assert _histo(got[1][3])[0][2] == 4
    assert np.all(_png(got[2][3]) == 127)


def test_same_records_as_torchs_writer(tmp_path):
    torch = pytest.importorskip("torch")
    try:
        from torch.utils.tensorboard import SummaryWriter as TorchWriter
    except ImportError as e:
        pytest.skip(f"torch.utils.tensorboard needs the tensorboard package, not installed ({e})")
    data = np.random.default_rng(0).standard_normal(200)
    img = np.random.default_rng(1).random((3, 4, 5)).astype(np.float32)
    for writer, sub, conv in ((SummaryWriter, "m", minidl.tensor), (TorchWriter, "t",
                                                                    torch.tensor)):
        with writer(tmp_path / sub) as w:
            w.add_scalar("s", 0.5, 1, walltime=10.0)
            w.add_histogram("h", conv(data), 2, walltime=11.0)
            w.add_image("i", conv(img), 3, walltime=12.0)
            w.add_text("t", "hi", 4, walltime=13.0)
    mine, theirs = values(tmp_path / "m"), values(tmp_path / "t")
    assert [x[:3] for x in mine] == [x[:3] for x in theirs]
    for (_, _, _, a), (_, _, _, b) in zip(mine, theirs):
        assert sorted(f for f, _, _ in a) == sorted(f for f, _, _ in b)
    assert one(mine[0][3], 2) == one(theirs[0][3], 2)
    assert _histo(mine[1][3])[1].tolist() == _histo(theirs[1][3])[1].tolist()
    np.testing.assert_array_equal(_png(mine[2][3]), _png(theirs[2][3]))


def test_a_dropped_writer_writes_its_queue(tmp_path):
    import gc
    w = SummaryWriter(tmp_path, max_queue=100)
    w.add_scalar("a", 1.0, minidl.tensor(3))
    del w
    gc.collect()
    ((tag, step, _, _),) = values(tmp_path)
    assert (tag, step) == ("a", 3)


def test_bytes_of_one_scalar_event_are_protobufs(tmp_path):
    """Event{wall_time: 1.0, step: 2, summary{value{tag: "a", simple_value: 1.5}}} as protobuf
    serialises it (fields in number order), framed as one TFRecord."""
    with SummaryWriter(tmp_path) as w:
        w.add_scalar("a", 1.5, 2, walltime=1.0)
        assert w.get_logdir() == tmp_path  # given back as given
    (name,) = os.listdir(tmp_path)
    data = read_records(tmp_path / name)[1]
    value = b"\x0a\x01a" + b"\x15" + struct.pack("<f", 1.5)
    expected = (b"\x09" + struct.pack("<d", 1.0) + b"\x10\x02"
                + b"\x2a" + bytes([len(value) + 2]) + b"\x0a" + bytes([len(value)]) + value)
    assert data == expected
    blob = (tmp_path / name).read_bytes()
    assert blob.endswith(struct.pack("<Q", len(expected)) + struct.pack(
        "<I", _masked(struct.pack("<Q", len(expected)))) + expected
        + struct.pack("<I", _masked(expected)))
