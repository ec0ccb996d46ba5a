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


# ---- found by the new-user walkthrough of 2026-12-06 ---------------------------------------
def _usage_error(capsys, main, argv, *fragments):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "error:" in last and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in last, (fragment, last)


@pytest.mark.parametrize("argv, fragments", [
    (["--seed", "-1", "--epochs", "0"], ["--seed", "non-negative"]),
    (["--device", "tpu"], ["--device", "unknown device 'tpu'"]),
    (["--save", "SAME", "--metrics-json", "SAME"], ["--save and --metrics-json", "same file"]),
    (["--save", ""], ["--save", "empty"]),
    (["--backend", "mpi"], ["--distributed"]),
])
def test_mnist_cli_refuses_before_any_work(tmp_path, capsys, argv, fragments):
    from minidl.examples import mnist as example

    argv = [str(tmp_path / "same.npz") if a == "SAME" else a for a in argv]
    _usage_error(capsys, example.main, argv, *fragments)


def test_resnet50_and_classifier_clis_check_seed_and_device(tmp_path, capsys):
    _usage_error(capsys, resnet_example.main,
                 ["--weights", "random", "--device", "tpu", "x.jpg"], "--device", "tpu")
    _usage_error(capsys, resnet_example.main,
                 ["--weights", "random", "--seed", "-3", "x.jpg"], "--seed")
    _usage_error(capsys, ic.main, ["train", str(tmp_path), "--split-seed", "-1"], "--split-seed")


def test_classifier_output_dir_is_probed(tmp_path):
    import os

    if not os.path.isdir("/proc/self"):
        pytest.skip("needs /proc, a folder nobody can create files in (Linux)")
    with pytest.raises(ValueError, match="cannot write in /proc"):
        classifier_module.check_output_dir("/proc/minidl-out")
    assert classifier_module.check_output_dir(tmp_path / "new" / "out")


def test_files_written_through_a_temporary_follow_the_umask(tmp_path):
    import os

    from minidl.serialization import new_temporary

    old = os.umask(0o022)
    try:
        path, f = new_temporary(tmp_path, ".x-", ".tmp")
        f.close()
        assert os.stat(path).st_mode & 0o777 == 0o644
        cache = classifier_module.FeatureCache(tmp_path / "cache", "w")
        import numpy as np

        cache.put("k" * 40, np.zeros(classifier_module.FEATURES, np.float32))
        modes = {os.stat(p).st_mode & 0o777 for p in (tmp_path / "cache").rglob("*.npy")}
        assert modes == {0o644}
    finally:
        os.umask(old)


def test_a_numpy_array_into_a_module_says_to_make_a_tensor():
    import numpy as np

    with pytest.raises(TypeError, match=r"numpy array of shape \(2, 3\).*minidl.tensor"):
        nn.Linear(3, 1)(np.zeros((2, 3), np.float32))


def test_manual_seed_takes_any_integer_and_refuses_the_rest():
    import minidl

    minidl.manual_seed(-1)  # PyTorch takes it too
    with pytest.raises(TypeError, match="manual_seed"):
        minidl.manual_seed(1.5)
