"""`validate` opens the data cheaply (headers, line counts) and refuses what training would refuse.

Real files in tmp_path, real checking; the CLI cases run `python -m nnspec` in subprocesses.
"""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from nnspec.check.checker import check_file

DENSE = "input [4]\n    linear(3)"


def write_spec(tmp_path: Path, data: str, model: str = DENSE, loss: str = "cross_entropy") -> Path:
    path = tmp_path / "run.nn"
    path.write_text(f"model m {{\n    {model}\n}}\n{data}\nloss {loss}\noptimizer adam(lr = 1e-3)\n")
    return path


def data_line(path: Path) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.startswith("data "))


def the_data_error(path: Path, *, open_data: bool = True):
    """The one error of `path`: E903, located on the data line, with a hint."""
    errors = [d for d in check_file(path, open_data=open_data).diagnostics if d.severity == "error"]
    assert len(errors) == 1, errors
    err = errors[0]
    assert err.code == "E903" and err.span.line == data_line(path) and err.hint, err
    return err


def write_csv(path: Path, header: str, rows: int, columns: int) -> None:
    lines = [header] + [",".join(str((r + c) % 3) for c in range(columns)) for r in range(rows)]
    path.write_text("\n".join(lines) + "\n")


def test_a_missing_data_file_is_refused_at_the_data_line(tmp_path):
    path = write_spec(tmp_path, 'data csv(path = "nowhere.csv")')
    err = the_data_error(path)
    assert "data file not found" in err.message and str(tmp_path / "nowhere.csv") in err.message
    assert str(tmp_path) in err.hint           # relative paths start at the spec's folder
    assert err.span.column == 6                # the dataset, after `data `


def test_csv_columns_must_fit_the_model_input(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b,c,label", rows=20, columns=4)
    path = write_spec(tmp_path, 'data csv(path = "t.csv")', model="input [5]\n    linear(3)")
    err = the_data_error(path)
    assert "3 features per sample but the model input is [5]" in err.message
    assert "[3]" in err.hint


def test_a_csv_target_column_must_exist(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b,c,d,label", rows=20, columns=5)
    path = write_spec(tmp_path, 'data csv(path = "t.csv", target = "labl")')
    err = the_data_error(path)
    assert "no column `labl`" in err.message and "label" in err.hint


def test_a_csv_that_fits_validates(tmp_path):
    write_csv(tmp_path / "t.csv", "a,b,c,d,label", rows=20, columns=5)
    result = check_file(write_spec(tmp_path, 'data csv(path = "t.csv")'))
    assert result.ok, result.diagnostics


def test_npy_sample_shape_must_fit_the_input(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 3, 8, 8), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(10, np.int64))
    path = write_spec(tmp_path, 'data npy(x = "x.npy", y = "y.npy")',
                      model="input [1, 8, 8]\n    flatten -> linear(3)")
    err = the_data_error(path)
    assert "samples of shape [3, 8, 8] (192 values) but the model input is [1, 8, 8]" in err.message


def test_npy_inputs_and_targets_must_pair_up(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(9, np.int64))
    err = the_data_error(write_spec(tmp_path, "data npy"))
    assert "10 input samples but 9 targets" in err.message


def test_npz_member_headers_are_read_from_compressed_archives(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=np.zeros((10, 6), np.float32), y=np.zeros(10, np.int64))
    err = the_data_error(write_spec(tmp_path, 'data npz("d.npz")'))
    assert "6 features per sample but the model input is [4]" in err.message
    missing = write_spec(tmp_path, 'data npz("d.npz", x = "inputs")')
    assert "no array `inputs`" in the_data_error(missing).message


def test_regression_targets_must_fit_the_outputs(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((10, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros((10, 2), np.float32))
    err = the_data_error(write_spec(tmp_path, "data npy", loss="mse"))
    assert "2 targets per sample but the model has 3 outputs" in err.message


def test_declared_classes_must_fit_the_outputs(tmp_path):
    err = the_data_error(write_spec(tmp_path, "data blobs(features = 4, classes = 5)"))
    assert "label 4" in err.message and "3 outputs" in err.message


def test_random_crop_larger_than_the_image(tmp_path):
    path = write_spec(tmp_path, "data digits(shape = [1, 8, 8]) {\n    augment random_crop(16)\n}",
                      model="input [1, 8, 8]\n    flatten -> linear(10)")
    errors = [d for d in check_file(path, open_data=False).diagnostics if d.severity == "error"]
    assert len(errors) == 1 and errors[0].code == "E903"
    assert errors[0].span.line == data_line(path) + 1           # at the augmentation
    assert "larger than the padded image [8, 8]" in errors[0].message and errors[0].hint


@pytest.mark.parametrize("rows", [9, 10])
def test_an_empty_split_is_refused_exactly_when_training_refuses_it(tmp_path, rows):
    """Validate and training apply one split rule: 9 rows leave val empty, 10 do not."""
    from nnspec.runtime.data import DataError, load_data
    import nnspec
    write_csv(tmp_path / "t.csv", "a,b,c,d,label", rows=rows, columns=5)
    path = write_spec(tmp_path, 'data csv(path = "t.csv") {\n    split(train = 0.9, val = 0.05, test = 0.05)\n    batch 2\n}')
    result = check_file(path)
    spec = nnspec.load(path, open_data=False)
    try:
        load_data(spec.data, base_dir=spec.base_dir, seed=0, input_type=spec.model.input,
                  classification=True, num_outputs=3)
        trains = True
    except DataError as err:
        trains, message = False, err.message
    assert result.ok == trains == (rows == 10)
    if not trains:
        assert "the val split is empty" in message and "the val split is empty" in the_data_error(path).message


def test_npy_rows_come_from_the_header_for_the_split_rule(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float32))
    np.save(tmp_path / "y.npy", np.zeros(3, np.int64))
    err = the_data_error(write_spec(tmp_path, "data npy"))      # default split 0.8 / 0.1 / 0.1
    assert "split is empty" in err.message and "3 samples" in err.message


def test_token_vocab_larger_than_the_embedding(tmp_path):
    path = write_spec(tmp_path, "data tokens(vocab = 1000, length = 16)",
                      model="input [16] long\n    embedding(100, 8) -> flatten -> linear(2)")
    err = the_data_error(path)
    assert "go up to 999" in err.message and "num_embeddings = 100" in err.message and "1000" in err.hint
    fits = write_spec(tmp_path, "data tokens(vocab = 100, length = 16)",
                      model="input [16] long\n    embedding(100, 8) -> flatten -> linear(2)")
    assert check_file(fits).ok


def test_relative_paths_start_at_the_spec_folder_from_any_working_directory(tmp_path):
    (tmp_path / "sub").mkdir()
    np.save(tmp_path / "sub" / "x.npy", np.zeros((40, 4), np.float32))
    np.save(tmp_path / "sub" / "y.npy", np.zeros(40, np.int64))
    write_spec(tmp_path, 'data npy(x = "sub/x.npy", y = "sub/y.npy")')
    out = subprocess.run([sys.executable, "-m", "nnspec", "validate", "run.nn"], cwd=tmp_path,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    elsewhere = subprocess.run([sys.executable, "-m", "nnspec", "validate", str(tmp_path / "run.nn")],
                               cwd=tmp_path / "sub", capture_output=True, text=True)
    assert elsewhere.returncode == 0, elsewhere.stdout + elsewhere.stderr


def test_no_data_skips_opening_the_data(tmp_path):
    spec = write_spec(tmp_path, 'data csv(path = "absent.csv")')
    opened = subprocess.run([sys.executable, "-m", "nnspec", "validate", str(spec)], capture_output=True, text=True)
    assert opened.returncode == 1
    assert f"{spec}:{data_line(spec)}:6: error[E903]: data file not found" in opened.stdout
    skipped = subprocess.run([sys.executable, "-m", "nnspec", "validate", "--no-data", str(spec)],
                             capture_output=True, text=True)
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    assert "1 file checked (data not opened): 1 valid" in skipped.stdout


def _truncated_npy(path: Path, shape, dtype) -> None:
    """A .npy header promising `shape` followed by no data at all."""
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)),
                                                  "fortran_order": False, "shape": shape})


def test_validate_reads_headers_only_and_never_imports_torch(tmp_path):
    # 4 GB promised, none present: reading more than the header would fail or take long
    _truncated_npy(tmp_path / "x.npy", (16_000_000, 64), np.float32)
    _truncated_npy(tmp_path / "y.npy", (16_000_000,), np.int64)
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        for name, shape in (("x", (16_000_000, 64)), ("y", (16_000_000,))):
            _truncated_npy(tmp_path / f"m_{name}.npy", shape, np.float32)
            archive.write(tmp_path / f"m_{name}.npy", f"{name}.npy")
    good = write_spec(tmp_path, "data npy", model="input [64]\n    linear(3)")
    (tmp_path / "z.nn").write_text(good.read_text().replace("data npy", 'data npz("d.npz")'))
    code = ("import sys; from nnspec.cli.commands import main; rc = main(['validate', %r, %r]); "
            "assert 'torch' not in sys.modules, 'torch was imported'; sys.exit(rc)") % (str(good), str(tmp_path / "z.nn"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "2 files checked: 2 valid" in out.stdout


def test_damaged_files_are_located_errors_not_tracebacks(tmp_path):
    import io
    buf = io.BytesIO()
    np.save(buf, np.zeros((5, 4)))
    with zipfile.ZipFile(tmp_path / "d.npz", "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("x.npy", buf.getvalue())
        archive.writestr("y.npy", buf.getvalue())
    raw = bytearray((tmp_path / "d.npz").read_bytes())
    raw[60:80] = bytes(range(20))                       # inside x's deflated stream
    (tmp_path / "d.npz").write_bytes(bytes(raw))
    (tmp_path / "t.csv").write_bytes(bytes(range(256)))
    (tmp_path / "x.npy").write_bytes(b"hello world")
    for data, what in (('npz("d.npz")', "d.npz"), ('csv(path = "t.csv")', "not UTF-8"),
                       ("npy", "could not be read as .npy")):
        err = the_data_error(write_spec(tmp_path, f"data {data}"))
        assert what in err.message or what in (err.hint or ""), err


def test_the_declared_digits_rows_are_the_bundled_rows():
    from nnspec.builtins.datasets import readers
    from nnspec.builtins.datasets.declare import digits
    from nnspec.registry.binding import bind
    args, _ = bind(digits.params, [], [], "digits", digits.check)
    described = digits.info["describe"](args, ".")["data"]
    loaded = readers.digits(args, None)["data"]
    assert described.rows == len(loaded.x) and described.sample == loaded.x.shape[1:]
    assert described.classes == int(loaded.y.max()) + 1


def test_targets_are_not_judged_without_a_loss_or_metrics(tmp_path):
    """Without a loss or metrics, regression vs classification is open: only the inputs are checked."""
    path = tmp_path / "model_and_data.nn"
    path.write_text("model m {\n    input [64]\n    linear(10)\n}\ndata digits\n")
    assert check_file(path).ok
    path.write_text("model m {\n    input [63]\n    linear(10)\n}\ndata digits\n")
    assert not check_file(path).ok
