"""Command-line tools print one "error: ..." line and exit with status 2 on bad input; the
message names the file (issue 11 item 15)."""
import json
import struct
import zipfile

import pytest
from PIL import Image

from minidl import nn
from minidl.datasets.mnist import read_idx
from minidl.examples import image_classifier as ic
from minidl.examples import resnet50 as resnet_example
from minidl.vision import classifier as classifier_module


def _one_error_line(err, *fragments):
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert str(fragment) in lines[0], (fragment, lines[0])


def test_idx_header_whose_sizes_overflow_names_the_file(tmp_path):
    # 2**31 * 2**31 * 4 == 2**64: a 64-bit product wraps to 0, which matched the empty payload
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(struct.pack(">I3I", 0x803, 2**31, 2**31, 4))
    with pytest.raises(ValueError, match="train-images-idx3-ubyte.*truncated"):
        read_idx(path, 3)


def _evil_pth(path, marker):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", b"cos\nsystem\n(Vtouch " + str(marker).encode() + b"\ntR.")
        z.writestr("archive/byteorder", b"little")


def test_resnet50_cli_refused_pickle_is_one_error_line(tmp_path, capsys):
    image = tmp_path / "x.png"
    Image.new("RGB", (32, 32)).save(image)
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    _evil_pth(evil, marker)
    assert resnet_example.main([str(image), "--weights", str(evil)]) == 2
    _one_error_line(capsys.readouterr().err, "evil.pth", "refusing to load os.system")
    assert not marker.exists()


def test_image_classifier_cli_refused_pickle_is_one_error_line(tmp_path, capsys):
    photos = tmp_path / "photos"
    for cls in ("a", "b"):
        (photos / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (32, 32), (40 * i, 0, 0)).save(photos / cls / f"{i}.png")
    evil, marker = tmp_path / "evil.pth", tmp_path / "pwned"
    _evil_pth(evil, marker)
    code = ic.main([str(photos), "--weights", str(evil), "--cache-dir", str(tmp_path / "c"),
                    "--out", str(tmp_path / "out"), "--no-progress"])
    assert code == 2
    _one_error_line(capsys.readouterr().err, "evil.pth")
    assert not marker.exists()


def test_predict_with_a_classifier_json_lacking_classes(tmp_path, capsys):
    out_dir = tmp_path / "clf"
    layer = nn.Linear(2048, 2)
    classifier_module.ImageClassifier(layer, ["x", "y"], "random", "random-seed0").save(out_dir)
    meta = json.loads((out_dir / "classifier.json").read_text())
    del meta["classes"]
    (out_dir / "classifier.json").write_text(json.dumps(meta))
    image = tmp_path / "1.png"
    Image.new("RGB", (32, 32)).save(image)
    code = ic.main(["predict", str(image), "--weights", "random", "--classifier", str(out_dir),
                    "--cache-dir", str(tmp_path / "c"), "--no-progress"])
    assert code == 2
    _one_error_line(capsys.readouterr().err, "classifier.json")


@pytest.mark.parametrize("lr", ["nan", "inf"])
def test_image_classifier_refuses_a_non_finite_lr(tmp_path, capsys, lr):
    with pytest.raises(SystemExit) as exit_info:
        ic.main([str(tmp_path), "--weights", "random", "--lr", lr])
    assert exit_info.value.code == 2
    assert "--lr" in capsys.readouterr().err
