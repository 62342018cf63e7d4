"""Datasets, splits, normalization, batching and augmentations (nnspec.runtime.data & co)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings, strategies as st
import torch

from nnspec.registry.binding import bind
from nnspec.spec.settings import DataConfig, Use
from nnspec.errors import Span
from nnspec.registry.catalog import Catalog
from nnspec.builtins.augmentations.torch_impl import compose_augment
from nnspec.runtime import batching, threads
from nnspec.runtime import mapped as mapped_module
from nnspec.runtime.mapped import MappedArray
from nnspec.runtime.data import DataContext, DataError, load_data, normalize_tensor
from nnspec.registry.types import TensorType

CAT = Catalog.default()
THIRDS = {"train": 0.8, "val": 0.1, "test": 0.1}


def use(kind: str, name: str, **kw) -> Use:
    comp = CAT.get(kind, name)
    values = [(k, tuple(v) if isinstance(v, list) else v) for k, v in kw.items()]   # spec lists are tuples
    args, errors = bind(comp.params, [], values, name, comp.check)
    assert not errors, errors
    return Use(comp, args, Span("spec.nn", 3, 5, 3, 20))


def config(name: str, split=None, normalize="none", batch=32, drop_last=False, augment=(), **kw) -> DataConfig:
    return DataConfig(use("datasets", name, **kw), dict(split or THIRDS), batch_size=batch,
                      normalize=normalize, drop_last=drop_last, augment=tuple(augment))


def load(cfg, base=".", shape=(64,), dtype="float", classification=True, num_outputs=None, seed=0):
    return load_data(cfg, base_dir=str(base), seed=seed, input_type=TensorType(tuple(shape), dtype),
                     classification=classification, num_outputs=num_outputs)


def whole(split, batch=1000):
    xs, ys = zip(*split.batches(batch, shuffle=False))
    return torch.cat(xs), torch.cat(ys)


def ids_npy(tmp_path, n=200, features=4, name="x.npy"):
    """x[:, 0] is the sample id, so splits and batches can be traced to rows."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, features)).astype(np.float32)
    x[:, 0] = np.arange(n)
    y = (np.arange(n) % 3).astype(np.int64)
    np.save(tmp_path / name, x)
    np.save(tmp_path / ("y" + name[1:]), y)
    return x, y


def expect(cfg, *needles, **kw) -> DataError:
    with pytest.raises(DataError) as info:
        load(cfg, **kw)
    text = info.value.message + " " + (info.value.hint or "")
    for needle in needles:
        assert needle in text, text
    return info.value


# --- digits, splits, order ------------------------------------------------------------------------

def test_digits_loads_with_ten_classes_and_both_shapes():
    s = load(config("digits"), num_outputs=10)
    assert len(s.train) + len(s.val) + len(s.test) == 1797
    assert (len(s.val), len(s.test)) == (180, 180)
    assert s.train.x_dtype == "float"
    x, y = whole(s.train)
    assert x.shape == (len(s.train), 64) and y.dtype == torch.int64
    assert x.min() == 0 and x.max() == 16 and set(y.tolist()) == set(range(10))
    conv = load(config("digits", shape=[1, 8, 8]), shape=(1, 8, 8))
    assert whole(conv.train)[0].shape[1:] == (1, 8, 8)
    flat_to_conv = load(config("digits"), shape=(1, 8, 8))       # reshaped to the model's input
    assert torch.equal(whole(flat_to_conv.train)[0], whole(conv.train)[0])


@pytest.mark.parametrize("mmap", [False, True])
def test_splits_are_disjoint_cover_the_data_and_follow_the_seed(tmp_path, mmap):
    ids_npy(tmp_path)
    cfg = config("npy", mmap=mmap)
    parts = [whole(p)[0][:, 0].long().tolist() for _, p in load(cfg, tmp_path, shape=(4,)).items()]
    assert sorted(sum(parts, [])) == list(range(200))
    assert [len(p) for p in parts] == [160, 20, 20]
    again = [whole(p)[0][:, 0].long().tolist() for _, p in load(cfg, tmp_path, shape=(4,)).items()]
    other = [whole(p)[0][:, 0].long().tolist() for _, p in load(cfg, tmp_path, shape=(4,), seed=1).items()]
    assert again == parts and other != parts


@pytest.mark.parametrize("mmap", [False, True])
def test_batch_order_is_a_function_of_seed_and_epoch_and_resumes(tmp_path, mmap):
    ids_npy(tmp_path)
    train = load(config("npy", mmap=mmap), tmp_path, shape=(4,)).train

    def order(epoch, seed=0, start=0, drop_last=False):
        return [b[0][:, 0].long().tolist() for b in train.batches(
            16, shuffle=True, epoch=epoch, seed=seed, drop_last=drop_last, start_sample=16 * start)]

    first = order(0)
    assert first == order(0) and first != order(1) and first != order(0, seed=5)
    assert sorted(sum(first, [])) == sorted(sum(order(1), []))       # a permutation of the same rows
    assert order(0, start=4) == first[4:]
    assert order(0, start=len(first)) == []
    assert train.num_batches(16) == 10 and train.num_batches(15, drop_last=True) == 10
    assert len(order(0, drop_last=True)) == 10
    unshuffled = [b[0][:, 0].long().tolist() for b in train.batches(16, shuffle=False)]
    assert sum(unshuffled, []) == sorted(sum(first, []))


@pytest.mark.parametrize("read_ahead", [True, False], ids=["reader-thread", "foreground"])
@pytest.mark.parametrize("window", [1, 32 * 24 * 3 + 100, 1 << 24], ids=["batch-windows", "3-batch-windows", "one-window"])
def test_memmapped_npy_batches_equal_the_in_memory_path(tmp_path, monkeypatch, read_ahead, window):
    monkeypatch.setattr(batching, "reads_ahead", lambda device: read_ahead)
    monkeypatch.setattr(batching, "WINDOW_BYTES", window)       # rows are 24 bytes, batches 32 rows
    ids_npy(tmp_path, n=500, features=6)
    kw = dict(base=tmp_path, shape=(2, 3), classification=True, num_outputs=3)
    mem = load(config("npy", mmap=False, normalize="standard"), **kw)
    mapped = load(config("npy", mmap=True, normalize="standard"), **kw)
    assert mapped.train.mapped and not mem.train.mapped and mem.norm == mapped.norm
    for name in ("train", "val", "test"):
        for shuffle in (True, False):
            a = list(getattr(mem, name).batches(32, shuffle=shuffle, epoch=3, seed=7, device="cpu"))
            b = list(getattr(mapped, name).batches(32, shuffle=shuffle, epoch=3, seed=7, device="cpu"))
            assert len(a) == len(b) > 0
            for (xa, ya), (xb, yb) in zip(a, b):
                assert xb.shape[1:] == (2, 3) and torch.equal(xa, xb) and torch.equal(ya, yb)
    resumed = list(mapped.train.batches(32, shuffle=True, epoch=3, seed=7, start_sample=5 * 32))
    full = list(mapped.train.batches(32, shuffle=True, epoch=3, seed=7))
    assert all(torch.equal(p[0], q[0]) for p, q in zip(resumed, full[5:])) and len(resumed) == len(full) - 5


def test_mapped_rows_are_read_correctly_with_and_without_positional_reads(tmp_path):
    data = np.random.default_rng(0).normal(size=(97, 2, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", data)
    whole_map = np.load(tmp_path / "a.npy", mmap_mode="r")
    idx = np.array([5, 6, 7, 90, 3, 3, 96, 0, 1, 50, 49])        # runs, duplicates, both ends
    for arr, expected in ((whole_map, data), (whole_map[10:], data[10:])):   # a slice: the fallback
        mapped = MappedArray(arr)
        assert (mapped._fd is not None) == (arr is whole_map)
        sub = idx[idx < len(arr)]
        assert np.array_equal(mapped.take(sub), expected[sub])
        assert np.array_equal(mapped.take(np.sort(sub)), expected[np.sort(sub)])
        assert np.array_equal(mapped.read(3, 40), expected[3:40])
        blocks = [b for _, b in mapped.chunks(chunk_bytes=240)]
        assert len(blocks) == -(-len(arr) // 10) and np.array_equal(np.concatenate(blocks), expected)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(idx=st.lists(st.integers(0, 1999), max_size=700),
       plan=st.sampled_from([(24, 2), (120, 4), (4 << 20, 4), (4 << 20, 1)]))
@example(idx=[773, 773, 775], plan=(24, 2))      # as many rows as the span, with a repeat: not one run
def test_planned_reads_return_exactly_the_rows_asked_for(tmp_path, monkeypatch, idx, plan):
    """Any order, repeats, adjacent rows, gaps read through and skipped, runs cut at chunk ends."""
    path = tmp_path / "rows.npy"
    if not path.exists():
        np.save(path, np.arange(2000 * 6, dtype=np.int16).reshape(2000, 2, 3))   # 12-byte rows
    monkeypatch.setattr(mapped_module, "CHUNK_BYTES", plan[0])
    monkeypatch.setattr(mapped_module, "MIN_RUN", plan[1])
    data = np.load(path, mmap_mode="r")
    rows = MappedArray(data)
    assert rows._fd is not None and rows._gap_rows == mapped_module.GAP_BYTES // 12
    idx = np.array(idx, dtype=np.int64)
    got = rows.take(idx)
    assert got.shape == (len(idx), 2, 3) and np.array_equal(got, np.asarray(data)[idx])


def test_stopping_a_memmapped_epoch_early_leaves_no_thread(tmp_path, monkeypatch):
    monkeypatch.setattr(batching, "reads_ahead", lambda device: True)
    ids_npy(tmp_path, n=300)
    train = load(config("npy"), tmp_path, shape=(4,)).train
    before = threading.active_count()
    for i, _ in enumerate(train.batches(8, shuffle=True)):
        if i == 2:
            break
    assert threading.active_count() == before


# --- normalization -------------------------------------------------------------------------------

@pytest.mark.parametrize("mmap", [False, True])
def test_normalization_is_fitted_on_the_training_split_only(tmp_path, mmap):
    x, _ = ids_npy(tmp_path, n=300)
    x[:, 1] = x[:, 0] ** 1.5                          # a feature whose mean depends on which rows
    x[:, 2] = 5.0                                     # a constant feature: std 0 is treated as 1
    np.save(tmp_path / "x.npy", x)
    s = load(config("npy", mmap=mmap, normalize="standard"), tmp_path, shape=(4,))
    ids = whole(s.train)[0][:, 0]                     # normalized ids: undo to find the train rows
    mean, std = np.array(s.norm["mean"]), np.array(s.norm["std"])
    assert json.loads(json.dumps(s.norm)) == s.norm                  # saved with the run
    rows = np.rint(ids.numpy() * std[0] + mean[0]).astype(int)
    assert len(set(rows)) == len(s.train)
    assert np.allclose(mean, x[rows].mean(0)) and np.allclose(std, x[rows].std(0))
    assert not np.allclose(mean[1], x[:, 1].mean(), rtol=1e-3)
    xt = whole(s.train)[0]
    assert torch.allclose(xt.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(xt[:, [0, 1, 3]].std(0, unbiased=False), torch.ones(3), atol=1e-4)
    assert torch.equal(xt[:, 2], torch.zeros(len(xt)))
    val = whole(s.val)[0]
    assert torch.allclose(val, normalize_tensor(torch.from_numpy(x[np.rint(
        val[:, 0].numpy() * std[0] + mean[0]).astype(int)]), s.norm), atol=1e-5)


def test_minmax_uses_training_range(tmp_path):
    x, _ = ids_npy(tmp_path, n=100)
    s = load(config("npy", mmap=False, normalize="minmax"), tmp_path, shape=(4,))
    xt = whole(s.train)[0]
    assert torch.allclose(xt.min(0).values, torch.zeros(4)) and torch.allclose(xt.max(0).values, torch.ones(4))
    assert s.norm["min"][0] == min(s.norm["min"][0], 0) and s.norm["max"][0] <= 99


# --- file formats -------------------------------------------------------------------------------

def _sample_data(n=40):
    rng = np.random.default_rng(3)
    return rng.normal(size=(n, 3)).astype(np.float32), (np.arange(n) % 4).astype(np.int64)


def _check_round_trip(cfg, base, x, y):
    s = load(cfg, base, shape=(3,), num_outputs=4)
    xt, yt = whole(s.train)
    assert torch.allclose(xt, torch.from_numpy(x)) and torch.equal(yt, torch.from_numpy(y))
    return s


def test_csv_round_trip_with_header_target_in_the_middle_and_without_header(tmp_path):
    x, y = _sample_data()
    table = np.column_stack([x[:, :1], y, x[:, 1:]])
    lines = ["a,label,b,c"] + [",".join(repr(float(v)) for v in row) for row in table]
    (tmp_path / "d.csv").write_text("\n".join(lines) + "\n")
    _check_round_trip(config("csv", {"train": 1.0}, path="d.csv"), tmp_path, x, y)
    (tmp_path / "n.tsv").write_text("\n".join(l.replace(",", "\t") for l in lines[1:]) + "\n\n")
    _check_round_trip(config("csv", {"train": 1.0}, path="n.tsv", header=False, target=1, delimiter="\t"),
                      tmp_path, x, y)


def test_npy_npz_and_pt_round_trips(tmp_path):
    x, y = _sample_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.savez(tmp_path / "plain.npz", inputs=x, labels=y)
    np.savez_compressed(tmp_path / "packed.npz", inputs=x, labels=y)
    torch.save({"x": torch.from_numpy(x).to(torch.float64), "y": torch.from_numpy(y)}, tmp_path / "d.pt")
    whole_split = {"train": 1.0}
    assert _check_round_trip(config("npy", whole_split), tmp_path, x, y).train.mapped
    plain = _check_round_trip(config("npz", whole_split, path="plain.npz", x="inputs", y="labels"), tmp_path, x, y)
    assert plain.train.mapped and plain.train.source._fd is not None   # uncompressed: mapped in place
    packed = _check_round_trip(config("npz", whole_split, path="packed.npz", x="inputs", y="labels"), tmp_path, x, y)
    assert not packed.train.mapped
    _check_round_trip(config("pt", whole_split, path=str(tmp_path / "d.pt")), "/", x, y)


def test_separate_split_files_and_fractions_of_the_rest(tmp_path):
    x, y = _sample_data(90)
    for name, rows in (("main", slice(0, 80)), ("val", slice(80, 90))):
        np.savez(tmp_path / f"{name}.npz", x=x[rows], y=y[rows])
    s = load(config("npz", THIRDS, path="main.npz", val="val.npz"), tmp_path, shape=(3,))
    assert torch.allclose(whole(s.val)[0], torch.from_numpy(x[80:]))
    assert (len(s.train), len(s.test)) == (71, 9)                  # 0.8 : 0.1 of the main file
    np.save(tmp_path / "vx.npy", x[:5])
    np.save(tmp_path / "vy.npy", y[:5])
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    s = load(config("npy", {"train": 0.9, "val": 0.1}, test=["vx.npy", "vy.npy"]), tmp_path, shape=(3,))
    assert (len(s.train), len(s.val), len(s.test)) == (81, 9, 5)


def test_synthetic_datasets_are_seeded_by_the_run_seed():
    for name, shape, classification, outputs in (("blobs", (2,), True, 3), ("spirals", (2,), True, 2),
                                                 ("regression", (8,), False, 1)):
        cfg = config(name, samples=300)
        a, b, c = (load(cfg, shape=shape, classification=classification, num_outputs=outputs, seed=s)
                   for s in (0, 0, 1))
        xa, ya = whole(a.train)
        assert xa.shape == (240, shape[0]) and torch.equal(xa, whole(b.train)[0])
        assert not torch.equal(xa, whole(c.train)[0])
        if classification:
            assert ya.dtype == torch.int64
        else:
            assert ya.shape == (240, 1) and ya.dtype == torch.float32


def test_token_inputs_stay_integer_and_are_not_normalized(tmp_path):
    np.save(tmp_path / "x.npy", np.arange(60, dtype=np.float64).reshape(20, 3))
    np.save(tmp_path / "y.npy", np.zeros(20, dtype=np.int64))
    s = load(config("npy", {"train": 1.0}, normalize="standard"), tmp_path, shape=(3,), dtype="long")
    x, _ = whole(s.train)
    assert x.dtype == torch.int64 and torch.equal(x, torch.arange(60).reshape(20, 3))
    assert s.norm == {"method": "none"} and s.train.x_dtype == "long"
    np.save(tmp_path / "x.npy", np.full((20, 3), 0.5))
    expect(config("npy", {"train": 1.0}), "token", "0.5", base=tmp_path, shape=(3,), dtype="long")


# --- bad data ------------------------------------------------------------------------------------

def test_missing_file_names_the_full_path(tmp_path):
    err = expect(config("csv", path="nope.csv"), str(tmp_path / "nope.csv"), base=tmp_path)
    assert "spec's folder" in err.hint


def test_urls_are_refused():
    comp = CAT.get("datasets", "csv")
    _, errors = bind(comp.params, [], [("path", "https://example.com/d.csv")], "csv", comp.check)
    assert errors and "URL" in errors[0].message
    with pytest.raises(DataError, match="URL"):
        DataContext(".", 0, TensorType((1,))).resolve("s3://bucket/x.npy")


def test_csv_problems_name_file_line_and_column(tmp_path):
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,oops,1\n")
    expect(config("csv", path="d.csv"), "d.csv", "line 3", "column 2", "`b`", "oops", base=tmp_path, shape=(2,))
    (tmp_path / "e.csv").write_text("a,b,label\n1,2,0\n3,,1\n")
    expect(config("csv", path="e.csv"), "line 3", "empty cell", base=tmp_path, shape=(2,))
    (tmp_path / "r.csv").write_text("a,b,label\n1,2,0\n3,1\n")
    expect(config("csv", path="r.csv"), "line 3", "2 columns, expected 3", base=tmp_path, shape=(2,))
    expect(config("csv", path="d.csv", target="class"), "no column `class`", "a, b, label",
           base=tmp_path, shape=(2,))


def test_shape_mismatch_and_nonfinite_inputs(tmp_path):
    expect(config("digits"), "data has 64 features per sample but the model input is [3, 32, 32]",
           shape=(3, 32, 32))
    (tmp_path / "d.csv").write_text("a,b,label\n1,2,0\n3,nan,1\n4,inf,1\n5,6,0\n")
    expect(config("csv", path="d.csv"), "2 NaN/Inf values", "line 3", base=tmp_path, shape=(2,))
    x, _ = ids_npy(tmp_path, n=50)
    x[[7, 9], 2] = np.nan
    np.save(tmp_path / "x.npy", x)
    expect(config("npy"), "2 NaN/Inf", "row 7 of x.npy", base=tmp_path, shape=(4,))


def test_label_problems(tmp_path):
    expect(config("digits"), "label 9", "labels must be 0..4", num_outputs=5)
    x, y = _sample_data()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y + 0.5)
    expect(config("npy"), "must be integers", "0.5", base=tmp_path, shape=(3,))
    np.save(tmp_path / "y.npy", y - 1)
    expect(config("npy"), "label -1", "negative", base=tmp_path, shape=(3,))
    np.save(tmp_path / "y.npy", np.stack([y, y], 1).astype(np.float32))
    expect(config("npy"), "2 targets per sample", "1 output", base=tmp_path, shape=(3,),
           classification=False, num_outputs=1)


def test_empty_splits_and_no_batches(tmp_path):
    x, y = _sample_data(30)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    expect(config("npy", {"train": 0.99, "val": 0.01}), "val split is empty", "30 samples", base=tmp_path,
           shape=(3,))
    expect(config("npy", batch=64, drop_last=True), "no batches", base=tmp_path, shape=(3,))


def test_pt_files_load_tensors_only(tmp_path):
    torch.save({"x": torch.zeros(4, 3), "y": torch.zeros(4), "extra": Span.unknown()}, tmp_path / "bad.pt")
    expect(config("pt", path="bad.pt"), "weights_only", base=tmp_path, shape=(3,))
    torch.save([torch.zeros(4, 3)], tmp_path / "list.pt")
    expect(config("pt", path="list.pt"), "not a dict", base=tmp_path, shape=(3,))


# --- augmentations -------------------------------------------------------------------------------

def augment(name, **kw):
    u = use("augmentations", name, **kw)
    return u.component.load()(u.args)


def test_augmentations_keep_shapes_and_follow_the_generator():
    x = torch.randn(6, 2, 8, 8)
    for fn in (augment("random_flip"), augment("random_flip", axis="vertical"), augment("random_crop", size=8, padding=2),
               augment("random_affine", degrees=30), augment("gaussian_noise", std=0.5)):
        a = fn(x, torch.Generator().manual_seed(4))
        assert a.shape == x.shape and torch.equal(a, fn(x, torch.Generator().manual_seed(4)))
        assert not torch.equal(a, fn(x, torch.Generator().manual_seed(5)))


def test_flip_and_crop_match_torch():
    x = torch.randn(5, 3, 6, 7)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(augment("random_flip", p=1.0)(x, g), torch.flip(x, [-1]))
    assert torch.equal(augment("random_flip", p=1.0, axis="vertical")(x, g), torch.flip(x, [-2]))
    assert torch.equal(augment("random_flip", p=0.0)(x, g), x)
    assert torch.equal(augment("random_crop", size=[6, 7])(x, g), x)
    out = augment("random_crop", size=[4, 5], padding=1)(x, g)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    for i in range(len(x)):                                   # each sample is some window of its padded image
        assert any(torch.equal(out[i], padded[i, :, t:t + 4, l:l + 5]) for t in range(5) for l in range(5))
    assert torch.allclose(augment("random_affine", degrees=0, scale=[1, 1])(x, g), x, atol=1e-5)
    noise = augment("gaussian_noise", std=0.5)(torch.zeros(200, 1, 8, 8), g)
    assert abs(noise.std().item() - 0.5) < 0.02


def test_compose_checks_augmentations_against_the_input():
    flip = use("augmentations", "random_flip", p=1.0)
    run = compose_augment([flip, use("augmentations", "gaussian_noise", std=0.0)], TensorType((1, 4, 4)))
    x = torch.randn(3, 1, 4, 4)
    assert torch.equal(run(x, torch.Generator()), x.flip(-1))
    crop = use("augmentations", "random_crop", size=8)
    with pytest.raises(DataError, match="needs image batches") as info:
        compose_augment([crop], TensorType((64,)))
    assert info.value.span == crop.span
    with pytest.raises(DataError, match="turns samples"):
        compose_augment([use("augmentations", "random_crop", size=4)], TensorType((1, 8, 8)))


def test_declarations_do_not_import_torch():
    code = ("import sys, nnspec.builtins.datasets.declare, nnspec.builtins.augmentations.declare; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_synthetic_images_and_tokens_are_learnable_shapes_and_dtypes():
    splits = load(config("images", shape=(3, 4, 4), classes=3, samples=60), shape=(3, 4, 4), num_outputs=3)
    x, y = whole(splits.train)
    assert x.shape[1:] == (3, 4, 4) and x.dtype == torch.float32 and set(y.tolist()) <= {0, 1, 2}
    splits = load(config("tokens", vocab=50, length=7, classes=2, samples=60), shape=(7,), dtype="long",
                  num_outputs=2)
    x, y = whole(splits.train)
    assert x.shape[1:] == (7,) and x.dtype == torch.int64 and int(x.max()) < 50 and int(x.min()) >= 0
    again = load(config("tokens", vocab=50, length=7, classes=2, samples=60), shape=(7,), dtype="long",
                 num_outputs=2)
    assert torch.equal(whole(again.train)[0], x)            # seeded


def test_batches_are_read_ahead_unless_every_core_computes(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 4)
    assert not batching.reads_ahead(torch.device("cpu"))
    assert batching.reads_ahead(torch.device("meta"))              # any accelerator: compute is elsewhere
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert batching.reads_ahead(torch.device("cpu"))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")                     # two ranks × 2 threads on 4 cores
    assert not batching.reads_ahead(torch.device("cpu"))


def test_memmapped_batches_for_an_accelerator_move_whole_windows(tmp_path, monkeypatch):
    """The accelerator path (read ahead by the thread, one transfer per window, batches sliced and
    normalized on the device), run on torch's meta device: shapes, dtypes and counts only."""
    monkeypatch.setattr(batching, "WINDOW_BYTES", 24 * 32 * 3)                  # 3 batches per window
    ids_npy(tmp_path, n=500, features=6)
    kw = dict(base=tmp_path, shape=(2, 3), classification=True, num_outputs=3)
    mapped = load(config("npy", mmap=True, normalize="standard"), **kw).train
    got = list(mapped.batches(32, shuffle=True, epoch=1, seed=2, device="meta"))
    assert len(got) == mapped.num_batches(32)
    assert all(x.device.type == "meta" and y.device.type == "meta" for x, y in got)
    assert [x.shape[0] for x, _ in got] == [y.shape[0] for _, y in got]
    assert sum(x.shape[0] for x, _ in got) == len(mapped) and got[0][0].shape[1:] == (2, 3)


def test_a_plugin_augmentation_without_a_shape_rule_is_probed_once_when_built(monkeypatch):
    """Built-ins declare `info["sample_shape"]` (validate checks it); a plugin that declares none is
    run once on zeros when training builds it, so a shape change is a located DataError, not a
    shape error deep in the model."""
    import sys
    import types

    from nnspec.builtins.augmentations.torch_impl import compose_augment
    from nnspec.errors import DataError, Span
    from nnspec.registry import Component
    from nnspec.registry.types import Args, TensorType
    from nnspec.spec.settings import Use
    module = types.ModuleType("nnspec_test_shrink")
    module.shrink = lambda args: (lambda x, generator: x[:, :, :4, :4])
    module.keep = lambda args: (lambda x, generator: x.flip(-1))
    monkeypatch.setitem(sys.modules, "nnspec_test_shrink", module)
    span = Span("aug.nn", 3, 13, 3, 19)
    shrink = Use(Component("shrink", "augmentations", impl="nnspec_test_shrink:shrink"), Args({}), span)
    keep = Use(Component("keep", "augmentations", impl="nnspec_test_shrink:keep"), Args({}), span)
    assert compose_augment([keep], TensorType((3, 8, 8))) is not None
    with pytest.raises(DataError) as err:
        compose_augment([keep, shrink], TensorType((3, 8, 8)))
    assert "turns samples of shape [3, 8, 8] into [3, 4, 4]" in str(err.value) and err.value.span == span
