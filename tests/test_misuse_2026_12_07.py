"""Misuse audit of the newer public APIs (2026-12-07): each test is bad input a user would hit,
asserting the error type (PyTorch's, or ValueError/TypeError where torch's is RuntimeError)
and that the message names the offending argument, key, sample or file."""
import collections

import numpy as np
import pytest

import minidl
from minidl.utils import data as mdata


class _Items:
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


# --- 1. DataLoader: samples that do not batch together ------------------------------------

@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_mixed_number_and_string_names_the_sample(num_workers):
    ds = _Items([(np.ones(2), 0), (np.ones(2), 1), (np.ones(2), "cat")])
    loader = mdata.DataLoader(ds, batch_size=3, num_workers=num_workers)
    with pytest.raises(TypeError, match=r"found <class 'str'> \(field 1\) at sample 2 "
                                        r"\(dataset index 2\)"):
        list(loader)


@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_unequal_shapes_name_both_samples(num_workers):
    ds = _Items([(np.ones(2), 1), (np.ones(2), 1), (np.ones(3), 1)])
    loader = mdata.DataLoader(ds, batch_size=3, num_workers=num_workers)
    with pytest.raises(RuntimeError, match=r"\(field 0\), but got \[2\] at sample 0 \(dataset "
                                           r"index 0\) and \[3\] at sample 2 \(dataset index 2\)"):
        list(loader)
    with pytest.raises(ValueError):  # also a ValueError, as minidl's other shape errors
        list(mdata.DataLoader(ds, batch_size=3))


def test_loader_unequal_tuple_lengths_refused_not_truncated():
    # the first sample shorter than the second: its extra field was silently dropped
    ds = _Items([(np.ones(2), 1), (np.ones(2), 1, 2)])
    with pytest.raises(RuntimeError, match=r"equal size: sample 0 \(dataset index 0\) has "
                                           r"length 2, sample 1 \(dataset index 1\) has length 3"):
        list(mdata.DataLoader(ds, batch_size=2))
    ds = _Items([(np.ones(2), 1, 2), (np.ones(2), 1)])  # was an IndexError from inside
    with pytest.raises(ValueError, match=r"sample 1 \(dataset index 1\) has length 2"):
        list(mdata.DataLoader(ds, batch_size=2))


def test_loader_none_and_object_samples_refused():
    with pytest.raises(TypeError, match=r"found <class 'NoneType'> at sample 0"):
        list(mdata.DataLoader(_Items([None, None]), batch_size=2))
    with pytest.raises(TypeError, match=r"found <class 'object'> at sample 0"):
        list(mdata.DataLoader(_Items([object(), object()]), batch_size=2))


def test_loader_dict_field_shape_names_the_key():
    ds = _Items([{"x": np.ones(2)}, {"x": np.ones(1)}])
    with pytest.raises(ValueError, match=r"\(key 'x'\), but got \[2\] at sample 0"):
        list(mdata.DataLoader(ds, batch_size=2))


def test_loader_subset_names_the_subset_index():
    sub = mdata.Subset(_Items([np.ones(2), np.ones(3), np.ones(2)]), [2, 1])
    with pytest.raises(ValueError, match=r"at sample 1 \(dataset index 1\)"):
        list(mdata.DataLoader(sub, batch_size=2))


def test_loader_good_batches_unchanged():
    ds = _Items([(np.full(2, i, dtype=np.float32), i) for i in range(5)])
    batches = list(mdata.DataLoader(ds, batch_size=2))
    assert [b[1].tolist() for b in batches] == [[0, 1], [2, 3], [4]]
    assert batches[0][0].dtype == minidl.float32 and batches[0][0].shape == (2, 2)
    out = list(mdata.DataLoader(_Items(["a", "b"]), batch_size=2))
    assert out == [["a", "b"]]


# --- 2. save / load / load_state_dict ----------------------------------------------------

def test_save_into_missing_folder_refused_before_writing(tmp_path):
    target = tmp_path / "typo_dir" / "model.npz"
    with pytest.raises(FileNotFoundError, match="typo_dir does not exist") as info:
        minidl.save({"w": minidl.ones(2)}, target)
    assert isinstance(info.value, RuntimeError)  # torch.save's type too
    assert not (tmp_path / "typo_dir").exists()  # no folder made behind the user's back


def test_save_under_a_file_names_the_file(tmp_path):
    (tmp_path / "model.npz").write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match=r"model\.npz is a file, not a folder"):
        minidl.save({"w": minidl.ones(2)}, tmp_path / "model.npz" / "inner.npz")
    assert (tmp_path / "model.npz").read_bytes() == b"x"


def test_save_npz_still_makes_the_converter_output_folders(tmp_path):
    from minidl.serialization import save_npz

    save_npz({"w": np.ones(2)}, tmp_path / "a" / "b" / "w.npz")
    assert minidl.load(tmp_path / "a" / "b" / "w.npz")["w"].tolist() == [1.0, 1.0]


def test_load_directory_is_an_is_a_directory_error(tmp_path):
    with pytest.raises(IsADirectoryError, match=str(tmp_path.name)):
        minidl.load(tmp_path)


def test_load_of_a_torch_file_reads_it_without_running_its_code(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "model.pt"
    torch.save({"w": torch.ones(2), "step": 3, "parts": [torch.arange(2)]}, path)
    got = minidl.load(path)
    assert got["w"].tolist() == [1.0, 1.0] and got["step"] == 3
    assert isinstance(got["parts"][0], minidl.Tensor) and got["parts"][0].tolist() == [0, 1]
    hostile = tmp_path / "hostile.pt"
    torch.save({"f": collections.Counter("ab")}, hostile)  # a class no state dict holds
    with pytest.raises(Exception, match=r"hostile\.pt"):
        minidl.load(hostile)


def test_load_map_location_variants(tmp_path):
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2)}, path)
    for where in ("cpu", minidl.device("cpu"), {"cuda:0": "cpu"}, {"cpu": "cpu"}):
        assert minidl.load(path, map_location=where)["w"].device == "cpu"
    seen = []
    out = minidl.load(path, map_location=lambda t, loc: seen.append(loc) or t * 2)
    assert seen == ["cpu"] and out["w"].tolist() == [2.0, 2.0]
    assert minidl.load(path, map_location=lambda t, loc: None)["w"].tolist() == [1.0, 1.0]


def test_load_bad_map_location_names_the_argument_not_the_file(tmp_path):
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2)}, path)
    with pytest.raises(TypeError, match="map_location should be .* got int 3"):
        minidl.load(path, map_location=3)
    with pytest.raises(ValueError, match="map_location 'tpu' is not a device"):
        minidl.load(path, map_location="tpu")
    with pytest.raises(TypeError, match="map_location returned a str"):
        minidl.load(path, map_location=lambda t, loc: "cpu")


def test_save_load_of_a_file_object_works_and_a_non_path_is_a_clear_type_error(tmp_path):
    # torch.save/torch.load take binary file objects; so do minidl's (tests/
    # test_pytorch_examples_more.py checks buffers both ways against torch)
    with open(tmp_path / "f.npz", "wb") as f:
        minidl.save({"w": minidl.ones(1)}, f)
    with open(tmp_path / "f.npz", "rb") as f:
        assert minidl.load(f)["w"].tolist() == [1.0]
    with pytest.raises(TypeError, match="path must be a str, os.PathLike or a binary file "
                                        "object, got NoneType"):
        minidl.load(None)


@pytest.mark.parametrize("value", ["abc", None, {"x": 1}])
def test_load_state_dict_non_array_value_names_the_key(value):
    model = minidl.nn.Linear(2, 3)
    state = dict(model.state_dict())
    state["bias"] = value
    before = model.weight.numpy().copy()
    with pytest.raises(TypeError, match=r"parameter named 'bias'") as info:
        model.load_state_dict(state)
    assert isinstance(info.value, RuntimeError)  # torch's type
    np.testing.assert_array_equal(model.weight.numpy(), before)  # nothing half-loaded


def test_load_state_dict_torch_tensors_and_lists_still_load():
    torch = pytest.importorskip("torch")
    src = torch.nn.Linear(2, 3)
    model = minidl.nn.Linear(2, 3)
    model.load_state_dict(src.state_dict())
    np.testing.assert_allclose(model.weight.numpy(), src.weight.detach().numpy())
    model.load_state_dict({"weight": src.weight.detach().numpy(), "bias": [1.0, 2.0, 3.0]})
    assert model.bias.tolist() == [1.0, 2.0, 3.0]


# --- 3. checkpoint, swa_utils, layers given a non-Tensor ---------------------------------

def test_checkpoint_reentrant_refuses_keyword_arguments():
    from minidl.utils.checkpoint import checkpoint

    x = minidl.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="Unexpected keyword arguments: scale"):
        checkpoint(lambda t, scale=1: t * scale, x, use_reentrant=True, scale=3)
    out = checkpoint(lambda t, scale=1: t * scale, x, use_reentrant=False, scale=3)
    out.sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_checkpoint_sequential_names_a_bad_functions_argument():
    from minidl.utils.checkpoint import checkpoint_sequential

    x = minidl.ones(2, requires_grad=True)
    with pytest.raises(TypeError, match="functions must be an nn.Sequential .* got int"):
        checkpoint_sequential(5, 1, x, use_reentrant=False)
    with pytest.raises(TypeError, match=r"functions\[1\] is a str"):
        checkpoint_sequential([minidl.nn.ReLU(), "relu"], 1, x, use_reentrant=False)


def test_averaged_model_of_another_architecture_names_the_parameter():
    from minidl.optim.swa_utils import AveragedModel

    avg = AveragedModel(minidl.nn.Linear(2, 2))
    before = avg.module.weight.numpy().copy()
    with pytest.raises(ValueError, match=r"weight has shape \(2, 3\) in the model, \(2, 2\) in "
                                         r"the averaged copy"):
        avg.update_parameters(minidl.nn.Linear(3, 2))
    np.testing.assert_array_equal(avg.module.weight.numpy(), before)
    assert int(avg.n_averaged.item()) == 0


def test_averaged_model_refuses_a_model_with_more_parameters():
    from minidl.optim.swa_utils import AveragedModel

    nn = minidl.nn
    avg = AveragedModel(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="the model has 4 parameters, the averaged copy 2"):
        avg.update_parameters(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))


def test_averaged_model_buffer_mismatch_checked_before_any_write():
    from minidl.optim.swa_utils import AveragedModel

    nn = minidl.nn
    avg = AveragedModel(nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2)))
    other = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(3))
    other[1].weight = nn.Parameter(minidl.ones(2))  # same parameters, other buffers
    other[1].bias = nn.Parameter(minidl.zeros(2))
    before = avg.module[0].weight.numpy().copy()
    with pytest.raises(ValueError, match=r"buffer 1.running_mean has shape \(3,\)"):
        avg.update_parameters(other)
    np.testing.assert_array_equal(avg.module[0].weight.numpy(), before)


@pytest.mark.parametrize("bad", [{"x": 1}, [1.0, 2.0], None])
def test_layers_given_a_non_tensor_raise_torch_type_error(bad):
    nn = minidl.nn
    with pytest.raises(TypeError, match=f"must be Tensor, not {type(bad).__name__}"):
        nn.Linear(2, 2)(bad)
    with pytest.raises(TypeError, match=f"got {type(bad).__name__}"):
        nn.Conv2d(1, 1, 1)(bad)


def test_update_bn_over_a_loader_of_dicts_is_a_type_error():
    from minidl.optim.swa_utils import update_bn

    nn = minidl.nn
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(TypeError, match="must be Tensor, not dict"):  # was an AttributeError
        update_bn([{"x": minidl.ones(3, 2)}], model)


# --- 4. models: weights files and the converter CLI ---------------------------------------

def test_get_model_loads_weights_written_by_minidl_save(tmp_path):
    from minidl import models

    src = models.resnet18(num_classes=3)
    minidl.save(src.state_dict(), tmp_path / "r18.npz")  # was: "expected one data.pkl"
    model = models.get_model("resnet18", weights=tmp_path / "r18.npz", num_classes=3)
    np.testing.assert_array_equal(model.fc.weight.numpy(), src.fc.weight.numpy())
    minidl.save({"model": src.state_dict(), "epoch": 2}, tmp_path / "ck.npz")  # a checkpoint
    model = models.get_model("resnet18", weights=tmp_path / "ck.npz", num_classes=3)
    np.testing.assert_array_equal(model.conv1.weight.numpy(), src.conv1.weight.numpy())
    with pytest.raises(ValueError, match=r"(?s)r18\.npz do not fit ResNet .*missing: layer1\.2\."):
        models.get_model("resnet34", weights=tmp_path / "r18.npz", num_classes=3)


def test_get_model_weights_directory_says_directory(tmp_path):
    from minidl import models

    with pytest.raises(IsADirectoryError, match=f"{tmp_path.name} is a directory"):
        models.get_model("resnet18", weights=tmp_path)


def test_list_models_bad_include_names_the_argument():
    from minidl import models

    with pytest.raises(TypeError, match="list_models: include must be a pattern"):
        models.list_models(include=5)
    with pytest.raises(TypeError, match="exclude must be"):
        models.list_models(exclude=3.5)
    assert models.list_models(include="resnet1*") == ["resnet101", "resnet152", "resnet18"]


def test_convert_cli_input_directory_is_one_error_line(tmp_path, capsys):
    from minidl.models.convert import main

    assert main([str(tmp_path), str(tmp_path / "out.npz"), "--arch", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error: checkpoint" in err[0] and "is a directory" in err[0]


def test_convert_cli_checks_the_output_before_reading_the_input(tmp_path, capsys):
    from minidl.models.convert import main

    bad_input = tmp_path / "corrupt.pth"
    bad_input.write_bytes(b"PK\x03\x04 not really a zip")
    blocker = tmp_path / "blocker"
    blocker.write_bytes(b"keep")
    assert main([str(bad_input), str(blocker / "out.npz"), "--arch", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "blocker is a file, not a folder" in err[0]  # the output is named
    assert main([str(bad_input), str(tmp_path), "--arch", "none"]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert blocker.read_bytes() == b"keep"


# --- 5. ImageClassifier -------------------------------------------------------------------

def _tiny_classifier():
    from minidl.vision import classifier

    layer = minidl.nn.Linear(classifier.feature_dim("resnet50"), 2)
    return classifier.ImageClassifier(layer, ["cats", "dogs"], "random", "random-seed0",
                                      progress=False)


@pytest.mark.parametrize("bad, named", [(None, "got NoneType"), (5, "got int"),
                                        ([None], r"holds a NoneType \(None\)")])
def test_classifier_predict_bad_paths_argument_named(bad, named):
    with pytest.raises(TypeError, match=f"paths_or_folder .*{named}"):
        _tiny_classifier().predict(bad)


def test_classifier_save_to_a_file_name_is_refused_before_writing(tmp_path):
    clf = _tiny_classifier()
    with pytest.raises(ValueError, match=r"model\.npz looks like a file name; save takes a folder"):
        clf.save(tmp_path / "model.npz")
    assert not (tmp_path / "model.npz").exists()
    (tmp_path / "kept.npz").write_bytes(b"old")  # an existing file is refused, and kept
    with pytest.raises(ValueError, match=r"kept\.npz exists and is not a directory"):
        clf.save(tmp_path / "kept.npz")
    assert (tmp_path / "kept.npz").read_bytes() == b"old"
    npz, sidecar = clf.save(tmp_path / "out")
    assert npz.endswith("classifier.npz") and sidecar.endswith("classifier.json")


def test_random_weights_warning_names_the_arch_in_use(capsys):
    from minidl.vision.classifier import resolve_weights

    assert resolve_weights("random", arch="resnet18")[1] == "random-resnet18-seed0"
    err = capsys.readouterr().err
    assert "resnet18 runs on RANDOM weights" in err and "ResNet-50" not in err
    resolve_weights("random")
    assert "ResNet-50 runs on RANDOM weights" in capsys.readouterr().err


# --- 6. profiler --------------------------------------------------------------------------

def test_profiler_results_before_a_finished_recording_are_refused(tmp_path):
    from minidl import profiler

    prof = profiler.profile()
    with pytest.raises(AssertionError, match=r"export_chrome_trace\(\) has no finished "
                                             r"recording; it has not run") as info:
        prof.export_chrome_trace(tmp_path / "t.json")  # was: an empty trace, silently
    assert isinstance(info.value, RuntimeError)
    with pytest.raises(AssertionError, match=r"key_averages\(\) has no finished recording"):
        prof.key_averages()
    prof.start()
    try:
        minidl.ones(2) + 1
        with pytest.raises(RuntimeError, match="still recording: call it after stop"):
            prof.export_chrome_trace(tmp_path / "t.json")
    finally:
        prof.stop()
    assert not (tmp_path / "t.json").exists()
    prof.export_chrome_trace(tmp_path / "t.json")  # after stop: the trace
    assert b"traceEvents" in (tmp_path / "t.json").read_bytes()
    assert len(prof.events()) >= 1


def test_profiler_export_names_a_missing_folder_or_a_directory(tmp_path):
    from minidl import profiler

    with profiler.profile() as prof:
        minidl.ones(2) + 1
    with pytest.raises(FileNotFoundError, match=r"the folder .*nodir does not exist"):
        prof.export_chrome_trace(tmp_path / "nodir" / "t.json")
    with pytest.raises(IsADirectoryError, match="is a directory; give a file path"):
        prof.export_chrome_trace(tmp_path)
    with pytest.raises(TypeError, match="export_chrome_trace: path must be a str"):
        prof.export_chrome_trace(None)
    prof.export_chrome_trace(tmp_path / "t.json.gz")
    import gzip
    import json

    assert "traceEvents" in json.loads(gzip.decompress((tmp_path / "t.json.gz").read_bytes()))
    assert [p.name for p in tmp_path.iterdir()] == ["t.json.gz"]  # no temporary left behind


@pytest.mark.filterwarnings("ignore:Profiler won't be using warmup")
def test_profiler_export_from_on_trace_ready_still_works(tmp_path):
    from minidl import profiler

    out = tmp_path / "cycle.json"
    with profiler.profile(schedule=profiler.schedule(wait=0, warmup=0, active=1),
                          on_trace_ready=lambda p: p.export_chrome_trace(out)) as prof:
        minidl.ones(2) + 1
        prof.step()
    assert b"traceEvents" in out.read_bytes()


# --- 1b. DataLoader: samplers that give non-integer indices, drop_last ----------------------

@pytest.mark.parametrize("num_workers", [0, 1])
def test_loader_float_indices_from_a_sampler_are_refused_not_floored(num_workers):
    ds = list(range(6))
    with pytest.raises(TypeError, match=r"sampler gave the index 0\.5 \(float\)"):
        list(mdata.DataLoader(ds, sampler=[0.5, 1.0], num_workers=num_workers))
    with pytest.raises(TypeError, match=r"batch_sampler gave the index 1\.5 \(float\)"):
        list(mdata.DataLoader(ds, batch_sampler=[[0, 1.5]], num_workers=num_workers))
    with pytest.raises(TypeError, match=r"sampler gave the index True \(bool\)"):
        list(mdata.DataLoader(ds, sampler=[True]))


def test_loader_sampler_and_batch_sampler_shapes_named():
    ds = list(range(6))
    with pytest.raises(TypeError, match="sampler must be an iterable of indices .* got int"):
        mdata.DataLoader(ds, sampler=5)
    with pytest.raises(TypeError, match="batch_sampler gave int 0, not a list of indices"):
        list(mdata.DataLoader(ds, batch_sampler=[0, 1]))


def test_loader_tensor_indices_still_work():
    ds = list(range(6))
    assert [b.tolist() for b in mdata.DataLoader(ds, sampler=minidl.tensor([2, 0]))] == [[2], [0]]
    # a batch sampler yielding index Tensors (this one failed before, in np.asarray)
    got = [b.tolist() for b in mdata.DataLoader(ds, batch_sampler=[minidl.tensor([2, 0]), [1]])]
    assert got == [[2, 0], [1]]


def test_loader_drop_last_must_be_a_bool():
    with pytest.raises(ValueError, match="drop_last should be a boolean value, but got "
                                         "drop_last='x'"):
        mdata.DataLoader(list(range(5)), batch_size=2, drop_last="x")
    assert len(mdata.DataLoader(list(range(5)), batch_size=2, drop_last=np.bool_(True))) == 2


# --- 2b. optimizer.load_state_dict -------------------------------------------------------

def _stepped(name, **kw):
    p = minidl.nn.Parameter(minidl.ones(3))
    opt = getattr(minidl.optim, name)([p], lr=0.1, **kw)
    (p * 2).sum().backward()
    opt.step()
    return opt


@pytest.mark.parametrize("field, value, named", [
    ("state", [1], r"'state' must be a dict .* got list \[1\]"),
    ("param_groups", 5, r"'param_groups' must be a list of dicts, got int 5"),
    ("param_groups", [5], r"'param_groups' must be a list of dicts, got list \[5\]"),
])
def test_optimizer_load_state_dict_malformed_fields_named(field, value, named):
    opt = _stepped("Adam")
    sd = opt.state_dict()
    sd[field] = value
    with pytest.raises(TypeError, match=named):  # was an AttributeError from inside
        opt.load_state_dict(sd)


def test_optimizer_load_state_dict_per_parameter_state_not_a_dict():
    opt = _stepped("Adam")
    sd = opt.state_dict()
    sd["state"][0] = 3.0
    with pytest.raises(TypeError, match=r"state 0 must be a dict \{name: value\}, got float"):
        opt.load_state_dict(sd)


def test_sgd_loads_a_none_momentum_buffer_as_torch_does():
    opt = _stepped("SGD", momentum=0.9)
    sd = opt.state_dict()
    sd["state"][0]["momentum_buffer"] = None  # torch: no buffer yet
    opt.load_state_dict(sd)
    p = opt.param_groups[0]["params"][0]
    p.grad = minidl.ones(3)
    opt.step()  # a fresh buffer: the plain gradient step
    np.testing.assert_allclose(p.numpy(), np.full(3, 0.8 - 0.1, np.float32), rtol=1e-6)
    assert opt.state_dict()["state"][0]["momentum_buffer"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("batch, named", [([1.0, "x"], r"entry 1 is a str \('x'\)"),
                                          ([1, None], r"entry 1 is a NoneType"),
                                          ([1, [2]], r"entry 1 is a list")])
def test_default_collate_numbers_mixed_with_others_named(batch, named):
    with pytest.raises(TypeError, match=named):  # was a string/object tensor or a NumPy error
        mdata.default_collate(batch)


def test_default_collate_numbers_unchanged():
    assert mdata.default_collate([1, 2.5]).dtype == minidl.float32  # torch.tensor's default
    assert mdata.default_collate([2.5, 1]).dtype == minidl.float64
    assert mdata.default_collate([True, 2]).tolist() == [1, 2]
    assert mdata.default_collate([np.int64(3), 4]).tolist() == [3, 4]


# --- the device paths of the new load checks, on the fake GPU ------------------------------

def test_load_map_location_forms_reach_the_fake_gpu(tmp_path, monkeypatch, host_kernels):
    import _fake_gpu

    _fake_gpu.install(monkeypatch, host_kernels)
    path = tmp_path / "m.npz"
    minidl.save({"w": minidl.ones(2), "n": 3}, path)
    for where in ("cuda", {"cpu": "cuda:0"}, minidl.device("cuda")):
        out = minidl.load(path, map_location=where)
        assert out["w"].device == "cuda" and out["n"] == 3
    out = minidl.load(path, map_location=lambda t, loc: t.to("cuda"))
    assert out["w"].device == "cuda" and out["w"].tolist() == [1.0, 1.0]
    model = minidl.nn.Linear(2, 1).to("cuda")
    with pytest.raises(TypeError, match="parameter named 'weight'"):
        model.load_state_dict({"weight": "w", "bias": minidl.zeros(1)})
