"""Agreement with neural-tangents: the same architectures built from the same
spec by both libraries: every closed-form activation, both parameterizations,
LayerNorm, Dropout, branches (FanOut / parallel / FanInSum / FanInProd / FanInConcat,
residual).

    python benchmarks/compare_nt.py --nt-python /path/to/neural-tangents/venv/bin/python
    python benchmarks/compare_nt.py --nt-python … --random 40 --seed 1

Inputs include identical, antipodal, zero and parallel rows ("cross", "sym"),
and a "plain" cross kernel without them.  Prints, per case, the largest
|K_ik - K_nt| / (|K_nt| + sqrt(K(x,x) K(x',x'))) over the three kernels, where
it occurs, and the entries neural-tangents returns as NaN/Inf (infkernel
returns none).  Differences above ~1e-12 sit at
correlation ±1, where neural-tangents evaluates its duals at a correlation
rounded off 1 (e.g. its Sign kernel at identical points is 1 - 1e-4, not 1).

``--random N``: N random networks instead (``random_cases``: depth 1-4 of
those activations, random W_std, b_std and widths, either parameterization,
LayerNorm, FanOut/parallel branches joined by FanInSum, FanInProd or
FanInConcat) on inputs of random dimension and scale, the special rows
included.  Known neural-tangents deviations it meets: an ExpNormalized in a
parallel branch (its width is lost: FanInConcat weights the branches
wrongly), RectifiedMonomial NaN or off on the diagonal, inputs of dimension
1 (every correlation is ±1), and entries that are exactly 0 (a zero row
without bias: |K| ≤ sqrt(K(x,x) K(0,0)) = 0) where it leaves ~1e-15, which
the relative measure shows as 1.  infkernel refuses networks whose variances
overflow (Exp layers at large inputs) where neural-tangents returns inf/NaN.
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


def random_cases(n, rng):
    """{name: spec} of ``n`` random networks (see the module docstring)."""
    def dense(param, width=None):
        return ("Dense", [int(width or rng.integers(1, 300))],
                {"W_std": float(rng.uniform(0.3, 2.5)), "parameterization": param,
                 "b_std": [None, 0.0, float(rng.uniform(0.0, 1.0))][rng.integers(3)]})

    def act():
        name, args = ACTIVATIONS[rng.integers(len(ACTIVATIONS))]
        return (name, args, {})

    out = {}
    for case in range(n):
        param = ("ntk", "standard")[rng.integers(2)]
        layers = []
        for _ in range(rng.integers(1, 5)):
            r = rng.random()
            if r < 0.15:   # two branches from one Gaussian signal, joined
                join = ("FanInSum", "FanInProd", "FanInConcat")[rng.integers(3)]
                w = int(rng.integers(2, 50))
                other = ([("Identity", [], {})] if join == "FanInSum" and rng.random() < 0.5
                         else [act(), dense(param, w if join != "FanInConcat" else None)])
                layers += [dense(param, w), ("FanOut", [2], {}),
                           ("parallel", [[act(), dense(param, w)], other], {}), (join, [], {})]
            elif r < 0.25:
                eps = [0.0, 1e-12, 0.3][rng.integers(3)]
                layers += [dense(param), ("LayerNorm", [], {"eps": eps}), act()]
            else:
                layers += [dense(param), act()]
        out[f"random {case}"] = layers + [dense(param, int(rng.integers(1, 4)))]
    return out


def build(lib, layers):
    """``lib.serial`` of a spec; ``parallel`` takes a list of sub-specs."""
    def one(name, args, kwargs):
        if name == "parallel":
            return lib.parallel(*[build(lib, branch) for branch in args])
        return getattr(lib, name)(*args, **kwargs)
    return lib.serial(*[one(*layer) for layer in layers])


def inputs(rng=None, d=6, scale=1.0):
    """x1 (23 × d) with identical, antipodal, zero and parallel rows among its
    first six, and x2 (17 × d) with a row of x1 and a zero row among its first
    two; the rest plain random points."""
    rng = np.random.default_rng(0) if rng is None else rng
    x1 = scale * rng.standard_normal((23, d))
    x1[1], x1[2], x1[3], x1[4] = x1[0], -x1[0], 0.0, 3.0 * x1[5]
    x2 = scale * rng.standard_normal((17, d))
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
        try:   # (random networks: a few neural-tangents refuses)
            _, _, kf = build(layers)
            for tag, a, b in (("cross", x1, x2), ("sym", x1, None), ("plain", x1[6:], x2[2:])):
                k = kf(a, b, ("nngp", "ntk"))
                res[f"{key}|{tag}|nngp"], res[f"{key}|{tag}|ntk"] = map(np.asarray, k)
        except Exception as exc:
            print(f"{key}: {type(exc).__name__}: {str(exc)[:200]}")
    np.savez(sys.argv[2], **res)
""")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nt-python", required=True,
                    help="python of a neural-tangents 0.6.5 environment")
    ap.add_argument("--random", type=int, default=0, metavar="N",
                    help="N random networks instead of the fixed cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of --random")
    args = ap.parse_args()
    if args.random:
        rng = np.random.default_rng(args.seed)
        specs = random_cases(args.random, rng)
        d, scale = int(rng.integers(1, 8)), float(10 ** rng.uniform(-1.5, 1.5))
        print(f"inputs: d = {d}, scale {scale:.3g}")
        x1, x2 = inputs(rng, d, scale)
    else:
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
        refused = dict(line.split(": ", 1) for line in run.stdout.splitlines()
                       if line.split(": ", 1)[0] in specs)
    print("| case | max rel. difference | at | plain inputs only | NT non-finite "
          "| infkernel non-finite |" + (" network |" if args.random else ""))
    print("|---|---|---|---|---|---|" + ("---|" if args.random else ""))
    for key, layers in specs.items():
        net = build(ik, layers)
        network = f" {describe(layers)} |" if args.random else ""
        if key in refused:
            print(f"| {key} | neural-tangents: {refused[key]} | | | | |{network}")
            continue
        try:
            row = compare(net, nt, key, x1, x2)
        except ik.KernelRangeError as exc:   # (NT: inf or NaN entries)
            row = f"refused: {str(exc)[:120]} | | | |"
        print(f"| {key} | {row}{network}")


def describe(layers):
    """A spec's layers other than Dense, branches in brackets."""
    return " ".join(f"[{' | '.join(map(describe, args))}]" if name == "parallel" else name
                    for name, args, _ in layers if name != "Dense")


def compare(net, nt, key, x1, x2):
    """The table row (after the case name) of one network."""
    worst, where, plain, bad_nt, bad_ik = 0.0, "", 0.0, 0, 0
    for tag, a, b in (("cross", x1, x2), ("sym", x1, None), ("plain", x1[6:], x2[2:])):
        k = net.kernel(a, b)
        d1 = net.diag(a)
        d2 = d1 if b is None else net.diag(b)
        for g in ("nngp", "ntk"):
            ref, got = nt[f"{key}|{tag}|{g}"], getattr(k, g)
            scale = np.outer(np.sqrt(np.abs(getattr(d1, g))), np.sqrt(np.abs(getattr(d2, g))))
            fin = np.isfinite(ref)
            bad_nt += int((~fin).sum())
            bad_ik += int((~np.isfinite(got)).sum())
            with np.errstate(invalid="ignore"):    # (NT's inf entries: masked)
                err = np.where(fin, np.abs(got - ref) / (np.abs(ref) + scale + 1e-300), 0.0)
            if tag == "plain":
                plain = max(plain, float(err.max()))
            if err.max() > worst:
                i, j = np.unravel_index(err.argmax(), err.shape)
                worst, where = float(err.max()), f"{tag} {g} ({i}, {j})"
    return f"{worst:.1e} | {where} | {plain:.1e} | {bad_nt} | {bad_ik} |"


if __name__ == "__main__":
    main()
