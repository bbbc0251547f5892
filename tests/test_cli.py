"""The ``infkernel gram`` command: output files equal the library's kernels;
bad input is an error (exit status 2) before any output file is created."""
import numpy as np
import pytest

import infkernel as ik
from infkernel.cli import main, parse_arch


@pytest.fixture
def files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    np.save("x.npy", rng.standard_normal((40, 4)))
    np.savetxt("x2.csv", rng.standard_normal((7, 4)), delimiter=",", header="a,b,c,d",
               comments="")
    np.save("bad.npy", rng.standard_normal((5, 3)))
    return tmp_path


def test_gram_writes_the_kernels(files):
    arch = "dense:16,leakyrelu(0.2),dense:16,erf(a=1, b=2),dense:1"
    assert main(["gram", "x.npy", "--x2", "x2.csv", "--arch", arch, "--quiet",
                 "--output", "g"]) == 0
    net = ik.serial(ik.Dense(16, 1.5, 0.05), ik.LeakyRelu(0.2), ik.Dense(16, 1.5, 0.05),
                    ik.Erf(1, 2), ik.Dense(1, 1.5, 0.05))
    x = np.load("x.npy")
    x2 = np.loadtxt("x2.csv", delimiter=",", skiprows=1)
    k = net.kernel(x, x2)
    assert np.array_equal(np.load("g_nngp.npy"), k.nngp)
    assert np.array_equal(np.load("g_ntk.npy"), k.ntk)


@pytest.mark.parametrize("argv, words", [
    (["gram", "x.npy", "--x2", "bad.npy"], "bad.npy has 3 features, x.npy has 4"),
    (["gram", "x.npy", "--arch", "dense:8,relu,relu"], "another activation"),
    (["gram", "x.npy", "--arch", "dense:8,identity(3)"], "identity(3)"),
    (["gram", "x.npy", "--arch", "dense:8,leakyrelu(alpha=x)"], "'x' is not a number"),
    (["gram", "x.npy", "--arch", "dense:x"], "expected dense:WIDTH"),
    (["gram", "x.npy", "--arch", "dense:²"], "expected dense:WIDTH"),
    (["gram", "x.npy", "--arch", "dense:8,relu(,dense:1"], "unclosed '('"),
    (["gram", "x.npy", "--arch", "dense:8,,relu,dense:1"], "empty layer at position 8"),
    (["gram", "x.npy", "--arch", "dense:8,relu)x,dense:1"], "unexpected ')' at position 12"),
    (["gram", "x.npy", "--arch", " "], "--arch is empty"),
    (["gram", "x.txt"], "expected a .npy or .csv file"),
    (["gram", "missing.npy"], "missing.npy"),
    (["gram", "x.npy", "--output", ""], "--output must be a file prefix such as 'gram'"),
    (["gram", "x.npy", "--output", "out/"], "got 'out/'"),
])
def test_gram_bad_input(files, capsys, argv, words):
    open("x.txt", "w").write("1 2\n")
    assert main(argv + ["--quiet"]) == 2
    assert words in capsys.readouterr().err
    assert not list(files.glob("gram_*.npy"))


def test_parse_arch_argument_forms():
    for spec in ("dense:4,erf(a=1 b=2 c=0.5),dense:1", "dense:4,erf(1, 2, 0.5),dense:1",
                 "dense:4, Erf(a=1;b=2;c=0.5) ,dense:1"):
        assert repr(parse_arch(spec).layers[1]) == "Erf(1, 2, 0.5)"
    net = parse_arch("dense:4,layernorm(eps=0.1),polynomial(0.3 -1 0.5),dense:4,hermite(3),dense:1")
    assert [repr(l) for l in net.layers[1:3]] == [repr(ik.LayerNorm(eps=0.1)),
                                                  "Polynomial([0.3, -1, 0.5])"]
    assert repr(parse_arch("dense:4,polynomial([0.3, -1, 0.5]),dense:1").layers[1]) == \
        "Polynomial([0.3, -1, 0.5])"         # a Python list, as ik.Polynomial takes it
    assert repr(net.layers[4]) == "Hermite(3)"
    net = parse_arch("dense:4,gabor,dropout(0.9),dense:4,expnormalized(gamma=2),dense:1")
    assert [type(l).__name__ for l in net.layers[2:5]] == ["Dropout", "Dense", "ExpNormalized"]
    assert net.layers[4].gamma == 2.0


@pytest.mark.parametrize("text, words", [
    ("1,2,3\n4,5\n", "ragged.csv, line 2: 2 values, but line 1 has 3"),
    ("a,b,c\n1,2,3\n\n4,5\n", "ragged.csv, line 4: 2 values, but line 2 has 3"),
    ("1,2,3\n4,x,6\n", "ragged.csv, line 2, column 2: 'x' is not a finite number"),
    ("a,b,c\n1,2,nan\n", "ragged.csv, line 2, column 3: 'nan' is not a finite number"),
    ("a,b\n1,2,3\n", "ragged.csv, line 1: the header names 2 columns, the data have 3"),
    ("x,1,2\n1,2,3\n", "line 1, column 1: 'x' is not a finite number (a header line may not "
                       "contain numbers)"),
])
def test_gram_bad_csv_names_the_file_line(files, capsys, text, words):
    """A ragged or non-numeric CSV is an error naming the 1-based line of the
    file (not a header guess that drops the first row, nor numpy's row index)."""
    open("ragged.csv", "w").write(text)
    assert main(["gram", "ragged.csv", "--quiet"]) == 2
    assert words in capsys.readouterr().err
    assert not list(files.glob("gram_*.npy"))


def test_gram_backend_failure_leaves_no_files(files, capsys, monkeypatch):
    """--backend gpu without a usable GPU fails before any file is created."""
    from infkernel import gpu

    def require():
        raise RuntimeError("backend='gpu' was requested but there is no GPU (test)")
    monkeypatch.setattr(gpu, "require", require)
    assert main(["gram", "x.npy", "--arch", "dense:8,relu,dense:1", "--backend", "gpu",
                 "--quiet"]) == 2
    assert "no GPU (test)" in capsys.readouterr().err
    assert not list(files.glob("gram_*.npy"))


def test_gram_failure_after_creating_files_removes_them(files, capsys, monkeypatch):
    """An exception once the output files exist (here injected into the
    kernel computation) removes them."""
    original = ik.Network.kernel

    def kernel(self, *args, out=None, **kwargs):
        if out is None:
            return original(self, *args, **kwargs)
        raise RuntimeError("disk full (test)")
    monkeypatch.setattr(ik.Network, "kernel", kernel)
    assert main(["gram", "x.npy", "--arch", "dense:8,relu,dense:1", "--quiet"]) == 2
    assert "disk full (test)" in capsys.readouterr().err
    assert not list(files.glob("gram_*.npy"))


def test_gram_overflow_is_refused_before_any_file(files, capsys):
    """W_std = 1e100 overflows the second layer's variance: an error from the
    diagonal pass, before the output files exist."""
    assert main(["gram", "x.npy", "--arch", "dense:8,relu,dense:1", "--W-std", "1e100",
                 "--quiet"]) == 2
    assert "the variance overflows float64" in capsys.readouterr().err
    assert not list(files.glob("gram_*.npy"))


def test_gram_numeric_activations_by_name(files):
    """The README's numeric activations are layer names of --arch."""
    net = parse_arch("dense:4,tanh,dense:4,elu(alpha=0.5),dense:4,swish,dense:4,srelu,dense:1")
    assert [repr(l) for l in net.layers[1::2]] == ["Tanh()", "Elu(0.5)", "Silu()", "SReLU()"]
    assert main(["gram", "x.npy", "--arch", "dense:8,softplus,dense:1", "--quiet"]) == 0
    k = ik.serial(ik.Dense(8, 1.5, 0.05), ik.Softplus(), ik.Dense(1, 1.5, 0.05)).kernel(
        np.load("x.npy"), None, "ntk")
    assert np.array_equal(np.load("gram_ntk.npy"), k)


def test_gram_directory_is_a_clean_error(files, capsys):
    """An OSError other than a missing file (here a directory named like a
    data file) is an error message and exit status 2, not a traceback."""
    (files / "dir.npy").mkdir()
    assert main(["gram", "dir.npy", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "infkernel gram: error:" in err and "dir.npy" in err
    assert not list(files.glob("gram_*.npy"))


def test_gram_csv_with_byte_order_mark(files):
    """Excel writes CSV files with a UTF-8 byte-order mark: it is skipped (it
    used to make the first number of a file without a header unreadable)."""
    (files / "bom.csv").write_bytes(b"\xef\xbb\xbf1,2\n3,4\n")
    assert main(["gram", "bom.csv", "--arch", "dense:4,relu,dense:1", "--quiet"]) == 0
    k = ik.serial(ik.Dense(4, 1.5, 0.05), ik.Relu(), ik.Dense(1, 1.5, 0.05)).kernel(
        np.array([[1.0, 2.0], [3.0, 4.0]]), None, "ntk")
    assert np.array_equal(np.load("gram_ntk.npy"), k)


def test_gram_refuses_to_overwrite_its_input(files, capsys):
    """An output prefix whose file is an input (``x_ntk.npy --output x``) is an
    error before any work: the input would be replaced, or deleted on failure."""
    np.save("p_nngp.npy", np.load("x.npy"))
    before = np.load("p_nngp.npy")
    for argv in (["gram", "p_nngp.npy", "--output", "p"],
                 ["gram", "x.npy", "--x2", "p_nngp.npy", "--output", "./p"]):
        assert main(argv + ["--quiet"]) == 2
        assert "which is the input file" in capsys.readouterr().err
        np.testing.assert_array_equal(np.load("p_nngp.npy"), before)
        assert not (files / "p_ntk.npy").exists()


def test_object_npy_names_the_file(files, capsys):
    """A .npy of Python objects (it would need pickle) is an error naming the file."""
    np.save("obj.npy", np.array([1, "a", None], dtype=object))
    assert main(["gram", "obj.npy", "--quiet"]) == 2
    assert "obj.npy: Object arrays cannot be loaded" in capsys.readouterr().err
