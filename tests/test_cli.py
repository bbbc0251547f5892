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
    (["gram", "x.txt"], "expected a .npy or .csv file"),
    (["gram", "missing.npy"], "missing.npy"),
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
    assert repr(net.layers[4]) == "Hermite(3)"
    net = parse_arch("dense:4,gabor,dropout(0.9),dense:4,expnormalized(gamma=2),dense:1")
    assert [type(l).__name__ for l in net.layers[2:5]] == ["Dropout", "Dense", "ExpNormalized"]
    assert net.layers[4].gamma == 2.0
