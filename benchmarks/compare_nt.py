"""Agreement with neural-tangents: the same architectures built from the same
spec by both libraries: every closed-form activation, both parameterizations,
LayerNorm, Dropout, branches (FanOut / parallel / FanInSum / FanInProd / FanInConcat,
residual).

    python benchmarks/compare_nt.py --nt-python /path/to/neural-tangents/venv/bin/python

Inputs include identical, antipodal, zero and parallel rows ("cross", "sym"),
and a "plain" cross kernel without them.  Prints, per case, the largest
|K_ik - K_nt| / (|K_nt| + sqrt(K(x,x) K(x',x'))) over the three kernels, where
it occurs, and the entries neural-tangents returns as NaN/Inf (infkernel
returns none).  Differences above ~1e-12 sit at
correlation ±1, where neural-tangents evaluates its duals at a correlation
rounded off 1 (e.g. its Sign kernel at identical points is 1 - 1e-4, not 1).
"""
import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np

import infkernel as ik

ACTIVATIONS = [
    ("Relu", []), ("LeakyRelu", [0.1]), ("ABRelu", [-0.3, 0.7]), ("Abs", []), ("Erf", []),
    ("Erf", [1.2, 0.8, 0.3]), ("Sigmoid_like", []), ("Gelu", []), ("Sin", []),
    ("Sin", [0.9, 1.1, 0.4]), ("Cos", [1.1, 0.7, 0.2]), ("Rbf", [0.7]), ("Gaussian", [1.1, -0.6]),
    ("Exp", [0.8, 0.5]), ("Sign", []), ("Monomial", [0]), ("Monomial", [2]), ("Monomial", [3]),
    ("RectifiedMonomial", [0]), ("RectifiedMonomial", [1]), ("RectifiedMonomial", [2]),
    ("RectifiedMonomial", [3]), ("Polynomial", [[0.3, -1.0, 0.5, 0.2]]),
    ("Polynomial", [[0.5, 0.0, -0.2, 0.0, 0.05]]), ("Gabor", []),
    ("ExpNormalized", []), ("ExpNormalized", [0.7, -0.5, True]), ("Identity", []),
]


def cases():
    """{name: [(layer, args, kwargs), ...]} understood by both libraries."""
    out = {}
    for name, args in ACTIVATIONS:
        for param in ("ntk", "standard"):
            layers = []
            for width in (300, 7):
                layers += [("Dense", [width], {"W_std": 1.3, "b_std": 0.2,
                                               "parameterization": param}),
                           (name, args, {})]
            layers.append(("Dense", [1], {"W_std": 0.9, "b_std": None,
                                          "parameterization": param}))
            out[f"{name}{tuple(args)} {param}"] = layers
    for degree in range(4):  # neural-tangents is NaN from the second such layer on
        out[f"RectifiedMonomial({degree}) one layer"] = [
            ("Dense", [30], {"W_std": 1.3, "b_std": 0.2}), ("RectifiedMonomial", [degree], {}),
            ("Dense", [1], {"W_std": 0.9})]
    out["mixed relu/erf/gelu"] = [
        ("Dense", [50], {"W_std": 1.5, "b_std": 0.05}), ("Relu", [], {}),
        ("Dense", [50], {"W_std": 1.2, "b_std": None}), ("Erf", [], {}),
        ("Dense", [50], {"W_std": 2.0, "b_std": 0.3}), ("Gelu", [], {}), ("Dense", [3], {})]
    out["relu depth 20"] = [l for _ in range(20) for l in (
        ("Dense", [64], {"W_std": 1.41, "b_std": 0.0}), ("Relu", [], {}))] + [("Dense", [1], {})]
    # LayerNorm keeps the signal Gaussian; with eps = 0 its variances are 1,
    # where neural-tangents' Hermite formula (k = q12ⁿ) is exact
    for degree in (0, 1, 2, 3, 5):
        out[f"LayerNorm(eps=0) + Hermite({degree})"] = [
            ("Dense", [64], {"W_std": 1.3, "b_std": 0.2}), ("LayerNorm", [], {"eps": 0.0}),
            ("Hermite", [degree], {}), ("Dense", [64], {"W_std": 1.1, "b_std": 0.1}),
            ("LayerNorm", [], {"eps": 0.0}), ("Hermite", [degree], {}), ("Dense", [1], {})]
    for param in ("ntk", "standard"):
        out[f"LayerNorm relu/erf, {param}"] = [
            ("Dense", [64], {"W_std": 1.3, "b_std": 0.2, "parameterization": param}),
            ("LayerNorm", [], {}), ("Relu", [], {}),
            ("Dense", [64], {"W_std": 1.1, "b_std": 0.1, "parameterization": param}),
            ("LayerNorm", [], {"eps": 0.5}), ("Erf", [], {}),
            ("Dense", [1], {"parameterization": param})]
    for param in ("ntk", "standard"):
        out[f"Dropout(0.8) train, {param}"] = [
            ("Dense", [64], {"W_std": 1.3, "b_std": 0.2, "parameterization": param}),
            ("Relu", [], {}), ("Dropout", [0.8], {}),
            ("Dense", [64], {"W_std": 1.1, "b_std": 0.1, "parameterization": param}),
            ("Erf", [], {}), ("Dropout", [0.5], {"mode": "test"}),
            ("Dense", [1], {"parameterization": param})]
    out["lone Dense"] = [("Dense", [5], {"W_std": 0.7, "b_std": 0.4})]
    for param, fan_in, widths in (("ntk", "FanInSum", (64, 64)),
                                  ("standard", "FanInSum", (64, 64)),
                                  ("ntk", "FanInConcat", (64, 64)),
                                  ("standard", "FanInConcat", (30, 90))):
        branches = ("parallel", [
            [("Relu", [], {}), ("Dense", [widths[0]], {"W_std": 1.2, "b_std": 0.2,
                                                      "parameterization": param})],
            [("Erf", [], {}), ("Dense", [widths[1]], {"W_std": 0.8, "parameterization": param})]],
            {})
        out[f"{fan_in} of relu/erf branches {widths}, {param}"] = [
            ("Dense", [64], {"W_std": 1.3, "b_std": 0.1, "parameterization": param}),
            ("FanOut", [2], {}), branches, (fan_in, [], {}),
            ("Dense", [32], {"W_std": 1.1, "b_std": 0.3, "parameterization": param}),
            ("Relu", [], {}), ("Dense", [1], {"parameterization": param})]
    for param in ("ntk", "standard"):
        out[f"FanInProd of dense/relu branches, {param}"] = [
            ("Dense", [64], {"W_std": 1.3, "b_std": 0.1, "parameterization": param}),
            ("FanOut", [2], {}),
            ("parallel", [[("Dense", [32], {"W_std": 1.1, "b_std": 0.2,
                                             "parameterization": param})],
                          [("Relu", [], {}), ("Dense", [32], {"W_std": 0.8,
                                                              "parameterization": param})]],
             {}),
            ("FanInProd", [], {}), ("Dense", [16], {"W_std": 1.2, "parameterization": param}),
            ("Erf", [], {}), ("Dense", [1], {"parameterization": param})]
    out["residual relu block"] = [
        ("Dense", [64], {"W_std": 1.3, "b_std": 0.1}), ("FanOut", [2], {}),
        ("parallel", [[("Relu", [], {}), ("Dense", [64], {"W_std": 1.2, "b_std": 0.2})],
                      [("Identity", [], {})]], {}),
        ("FanInSum", [], {}), ("Relu", [], {}), ("Dense", [1], {})]
    return out


def build(lib, layers):
    """``lib.serial`` of a spec; ``parallel`` takes a list of sub-specs."""
    def one(name, args, kwargs):
        if name == "parallel":
            return lib.parallel(*[build(lib, branch) for branch in args])
        return getattr(lib, name)(*args, **kwargs)
    return lib.serial(*[one(*layer) for layer in layers])


def inputs():
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((23, 6))
    x1[1], x1[2], x1[3], x1[4] = x1[0], -x1[0], 0.0, 3.0 * x1[5]
    x2 = rng.standard_normal((17, 6))
    x2[0], x2[1] = x1[0], 0.0
    return x1, x2


NT_SCRIPT = textwrap.dedent("""
    import json, sys, numpy as np, jax
    jax.config.update("jax_enable_x64", True)
    from neural_tangents import stax
    spec = json.load(open(sys.argv[1])); x1 = np.array(spec["x1"]); x2 = np.array(spec["x2"])
    res = {}
    def build(layers):
        def one(name, args, kwargs):
            if name == "parallel":
                return stax.parallel(*[build(branch) for branch in args])
            return getattr(stax, name)(*args, **kwargs)
        return stax.serial(*[one(*layer) for layer in layers])
    for key, layers in spec["cases"].items():
        _, _, kf = build(layers)
        for tag, a, b in (("cross", x1, x2), ("sym", x1, None), ("plain", x1[6:], x2[2:])):
            k = kf(a, b, ("nngp", "ntk"))
            res[f"{key}|{tag}|nngp"], res[f"{key}|{tag}|ntk"] = np.asarray(k[0]), np.asarray(k[1])
    np.savez(sys.argv[2], **res)
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", required=True,
                    help="python of a neural-tangents 0.6.5 environment")
    args = ap.parse_args()
    x1, x2 = inputs()
    specs = cases()
    with tempfile.TemporaryDirectory() as tmp:
        spec_file, result_file = Path(tmp) / "spec.json", Path(tmp) / "nt.npz"
        spec_file.write_text(json.dumps({"cases": specs, "x1": x1.tolist(), "x2": x2.tolist()}))
        run = subprocess.run([args.nt_python, "-W", "ignore", "-c", NT_SCRIPT, spec_file,
                              result_file],
                             capture_output=True, text=True)
        if run.returncode:
            sys.exit(f"neural-tangents run failed:\n{run.stderr[-2000:]}")
        nt = dict(np.load(result_file))
    print("| case | max rel. difference | at | plain inputs only | NT non-finite "
          "| infkernel non-finite |")
    print("|---|---|---|---|---|---|")
    for key, layers in specs.items():
        net = build(ik, layers)
        worst, where, plain, bad_nt, bad_ik = 0.0, "", 0.0, 0, 0
        for tag, a, b in (("cross", x1, x2), ("sym", x1, None), ("plain", x1[6:], x2[2:])):
            k = net.kernel(a, b)
            d1 = net.diag(a)
            d2 = d1 if b is None else net.diag(b)
            for g in ("nngp", "ntk"):
                ref, got = nt[f"{key}|{tag}|{g}"], getattr(k, g)
                scale = np.sqrt(np.outer(np.abs(getattr(d1, g)), np.abs(getattr(d2, g))))
                fin = np.isfinite(ref)
                bad_nt += int((~fin).sum())
                bad_ik += int((~np.isfinite(got)).sum())
                err = np.where(fin, np.abs(got - ref) / (np.abs(ref) + scale + 1e-300), 0.0)
                if tag == "plain":
                    plain = max(plain, float(err.max()))
                if err.max() > worst:
                    i, j = np.unravel_index(err.argmax(), err.shape)
                    worst, where = float(err.max()), f"{tag} {g} ({i}, {j})"
        print(f"| {key} | {worst:.1e} | {where} | {plain:.1e} | {bad_nt} | {bad_ik} |")


if __name__ == "__main__":
    main()
