"""The ``infkernel`` command.

    infkernel gram [FEATURES.npy|.csv] [--x2 FILE] --arch "dense:512,relu,dense:512,erf,dense:1"
    infkernel fit  ...     (GP / NTK regression; see ``infkernel fit -h``)
    infkernel verify ...   (finite-width networks against theory)

With no features file, ``gram`` runs on scikit-learn's bundled digits dataset.
"""
import argparse
import contextlib
import math
import os
import re
import sys
import time

import numpy as np

from . import activations, layers


def _arch_tokens(spec):
    """The comma-separated layers of an --arch string (commas inside
    parentheses belong to the arguments); empty layers and unbalanced
    parentheses are errors."""
    if not spec.strip():
        raise ValueError("--arch is empty")
    tokens, depth, start = [], 0, 0
    for i, ch in enumerate(spec + ","):
        if ch == "(":
            depth += 1
            if depth > 1:
                raise ValueError(f"--arch: nested parentheses at position {i}: {spec!r}")
        elif ch == ")":
            depth -= 1
            if depth < 0 or spec[i + 1:].lstrip()[:1] not in ("", ","):
                raise ValueError(f"--arch: unexpected ')' at position {i}: {spec!r}")
        elif ch == "," and depth == 0:
            token = spec[start:i].strip()
            if not token:
                raise ValueError(f"--arch: empty layer at position {start}: {spec!r}")
            tokens.append(token)
            start = i + 1
    if depth:
        raise ValueError(f"--arch: unclosed '(' in {spec!r}")
    return tokens


#: Layers named in --arch and --activation besides the activations.
_NAMED_LAYERS = {"identity": layers.Identity, "layernorm": layers.LayerNorm,
                 "dropout": layers.Dropout, "expnormalized": layers.ExpNormalized}


def parse_layer(token, option="--arch", names=None):
    """One layer from its name (case-insensitive) with optional arguments in
    parentheses, positional or ``key=value``, separated by spaces, commas or
    semicolons: ``relu``, ``leakyrelu(0.2)``, ``erf(a=1, b=2)``,
    ``monomial(3)``; ``polynomial(c0 c1 ... cn)`` takes its coefficients in
    numpy's order.  ``names``: the valid names (default: activations and
    the layers of ``_NAMED_LAYERS``)."""
    named = names if names is not None else {**_NAMED_LAYERS, **activations.ACTIVATIONS}
    name, paren, rest = token.partition("(")
    name = name.strip().lower()
    if paren and not rest.rstrip().endswith(")"):
        raise ValueError(f"{option}: unclosed '(' in {token!r}")
    factory = named.get(name)
    if factory is None:
        valid = ", ".join(sorted(named) + (["dense:N"] if option == "--arch" else []))
        what = "layer" if names is None else "activation"
        raise ValueError(f"{option}: unknown {what} {name!r}; valid: {valid}")
    args, kwargs = [], {}
    for item in re.split(r"[\s,;\[\]]+", rest.rstrip().rstrip(")")):
        if item:
            key, eq, value = item.rpartition("=")
            if eq:
                kwargs[key.strip()] = _number(value, token, option)
            else:
                args.append(_number(value, token, option))
    if factory is activations.Polynomial and args:
        args = [args]      # the coefficients are one argument
    try:
        return factory(*args, **kwargs)
    except TypeError as exc:
        raise ValueError(f"{option}: {token!r}: {exc}") from None


def parse_activation(text, option="--activation"):
    """An activation for --activation: ``relu``, ``leakyrelu(0.1)``,
    ``erf(a=1, b=2)``, as in --arch (``leakyrelu:0.1`` is read as
    ``leakyrelu(0.1)``)."""
    name, colon, args = text.partition(":")
    return parse_layer(f"{name}({args})" if colon else text, option,
                       activations.ACTIVATIONS)


def activation_option(text):
    """``parse_activation`` as an argparse ``type`` (its message shown as is)."""
    try:
        return parse_activation(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--activation: ")) from None


def parse_arch(spec, W_std=1.5, b_std=0.05, parameterization="ntk"):
    """Network from "dense:512,relu,dense:512,erf(a=1 b=2),dense:1".

    ``dense:N`` is a Dense layer of width N with the given stds; the other
    layers are read by :func:`parse_layer` (activations, ``layernorm(eps=0.1)``,
    ``dropout(0.9)``, ``expnormalized(gamma=2)``, ``identity``)."""
    out = []
    for token in _arch_tokens(spec):
        name = token.partition("(")[0].strip().lower()
        if name.startswith("dense"):
            _, _, width = name.partition(":")
            if not (width.strip().isascii() and width.strip().isdigit()) or "(" in token:
                raise ValueError(f"--arch: expected dense:WIDTH, got {token!r}")
            out.append(layers.Dense(int(width), W_std, b_std, parameterization))
        else:
            out.append(parse_layer(token))
    return layers.serial(*out)


def _number(text, token, option="--arch"):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    raise ValueError(f"{option}: {token!r}: {text!r} is not a number")


def load_features(path):
    """Features from .npy or .csv (numeric, comma-separated, optional header),
    checked as kernel inputs."""
    from .kernel import check_inputs
    if path.endswith(".npy"):
        x = load_npy(path)
    elif path.endswith(".csv"):
        x = load_csv(path)
    else:
        raise ValueError(f"{path}: expected a .npy or .csv file")
    if x.size == 0:
        raise ValueError(f"{path}: no data")
    return check_inputs(x, path)


def load_npy(path):
    """A .npy array; other files and object arrays (which would need pickle)
    are refused naming the file."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":
            raise ValueError(f"{path}: not a .npy file (as np.save writes)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc} (the file holds Python objects, not numbers)") from None


def _is_number(text):
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(path):
    """Rows of finite numbers separated by commas, blank lines skipped, after an
    optional header line in which no field is a number; a ValueError names the
    file line (1-based) of the first bad row."""
    with open(path, encoding="utf-8-sig") as f:   # a byte-order mark (Excel) is skipped
        rows = [(i, line) for i, line in enumerate(f.read().splitlines(), 1) if line.strip()]
    if rows and not any(_is_number(v) for v in rows[0][1].split(",")):
        (head, names), rows = rows[0], rows[1:]
    else:
        head, names = None, None
    if not rows:
        return np.zeros((0, 0))
    try:
        x = np.loadtxt([line for _, line in rows], delimiter=",", ndmin=2, comments=None)
    except ValueError:
        x = None
    if x is None or not np.isfinite(x).all():
        first, width = rows[0][0], len(rows[0][1].split(","))
        for lineno, line in rows:
            fields = line.split(",")
            if len(fields) != width:
                raise ValueError(f"{path}, line {lineno}: {len(fields)} values, but line "
                                 f"{first} has {width}: every row needs the same columns")
            for j, v in enumerate(fields, 1):
                if not (_is_number(v) and math.isfinite(float(v))):
                    hint = (" (a header line may not contain numbers)"
                            if head is None and lineno == first and not _is_number(v) else "")
                    raise ValueError(f"{path}, line {lineno}, column {j}: {v.strip()!r} is not "
                                     f"a finite number{hint}")
        raise ValueError(f"{path}: not a comma-separated table of numbers")
    if names is not None and len(names.split(",")) != x.shape[1]:
        raise ValueError(f"{path}, line {head}: the header names {len(names.split(','))} "
                         f"columns, the data have {x.shape[1]}")
    return x


def _digits():
    from sklearn.datasets import load_digits
    data = load_digits()
    return data.data / 16.0, data.target


def _add_arch_arguments(p):
    p.add_argument("--arch", default="dense:512,relu,dense:512,relu,dense:512,relu,dense:1",
                   help="layers, e.g. 'dense:512,relu,dense:512,erf,dense:1'")
    p.add_argument("--W-std", type=float, default=1.5)
    p.add_argument("--b-std", type=float, default=0.05)
    p.add_argument("--parameterization", choices=["ntk", "standard"], default="ntk")


def gram_main(args):
    if not os.path.basename(args.output):
        raise ValueError(f"--output must be a file prefix such as 'gram' or 'out/gram' "
                         f"(PREFIX_nngp.npy, PREFIX_ntk.npy), got {args.output!r}")
    if args.features is None:
        x1, _ = _digits()
        source = "scikit-learn digits (1797 x 64)"
    else:
        x1 = load_features(args.features)
        source = args.features
    x2 = None if args.x2 is None else load_features(args.x2)
    if x2 is not None and x2.shape[1] != x1.shape[1]:
        raise ValueError(f"{args.x2} has {x2.shape[1]} features, {source} has {x1.shape[1]}")
    for g in ("nngp", "ntk"):      # the outputs must not replace (or, on failure, delete) an input
        path = f"{args.output}_{g}.npy"
        for src in (args.features, args.x2):
            if src is not None and os.path.exists(path) and os.path.samefile(path, src):
                raise ValueError(f"--output {args.output!r} would write {path}, which is the "
                                 f"input file {src}: choose another output prefix")
    net = parse_arch(args.arch, args.W_std, args.b_std, args.parameterization)
    net.program(x1.shape[1])  # architecture errors before any output file exists
    dtype = np.float32 if args.float32 else np.float64
    # the backend check and the compilation (or cache load), also before any file
    net.kernel(x1[:2], None, dtype=dtype, backend=args.backend)
    n2 = len(x1) if x2 is None else len(x2)
    created, lines = [], []
    try:   # a failure from here on removes the files it created
        outs = []
        for g in ("nngp", "ntk"):
            path = f"{args.output}_{g}.npy"
            outs.append(np.lib.format.open_memmap(path, mode="w+", dtype=dtype,
                                                  shape=(len(x1), n2)))
            created.append(path)
        t0 = time.perf_counter()
        net.kernel(x1, x2, ("nngp", "ntk"), out=tuple(outs), dtype=dtype,
                   backend=args.backend, progress=not args.quiet)
        dt = time.perf_counter() - t0
        # (overflow, in float64 or float32, is refused before the kernel runs)
        for g, a, path in zip(("nngp", "ntk"), outs, created):
            a.flush()
            line = f"{g:8s}: written to {path}"
            if x2 is None and len(x1) <= 20000:
                line += (", min eigenvalue "
                         f"{np.linalg.eigvalsh(np.asarray(a, np.float64)).min():.3e}")
            lines.append(line)
    except BaseException:
        for path in created:
            with contextlib.suppress(OSError):
                os.remove(path)
        raise
    print(f"network : {net!r}")
    print(f"data    : {source}")
    print(f"shape   : {len(x1)} x {n2} ({'symmetric' if x2 is None else 'cross'}), {np.dtype(dtype).name}")
    print(f"time    : {dt:.3f} s, {len(x1) * n2 / max(dt, 1e-12) / 1e6:.1f} M entries/s")
    for line in lines:
        print(line)
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="infkernel", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("gram", help="NNGP/NTK Gram matrices of features (.npy/.csv)")
    g.add_argument("features", nargs="?", help=".npy or .csv; default: sklearn digits")
    g.add_argument("--x2", help="second feature file (cross kernel)")
    _add_arch_arguments(g)
    g.add_argument("--output", default="gram", help="output prefix (PREFIX_nngp.npy, PREFIX_ntk.npy)")
    g.add_argument("--float32", action="store_true")
    g.add_argument("--backend", choices=["auto", "cpu", "gpu"], default="auto")
    g.add_argument("--quiet", action="store_true", help="no progress bar")
    g.set_defaults(func=gram_main)
    for name, module, adder, runner, summary in (
            ("fit", "fit", "add_fit_arguments", "fit_command",
             "the main job: NNGP / NTK regression of a dataset beside an RBF-kernel GP"),
            ("verify", "verification", "add_verify_arguments", "run_verify",
             "finite-width networks against the infinite-width kernels")):
        mod = __import__(f"infkernel.{module}", fromlist=[adder])
        p = sub.add_parser(name, help=summary, description=mod.__doc__.replace("``", "'"),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        getattr(mod, adder)(p)
        p.set_defaults(func=getattr(mod, runner))
    args = parser.parse_args(argv)
    try:   # OSError: a missing or unreadable file, or a directory
        return args.func(args) or 0
    except (ValueError, TypeError, OSError, RuntimeError) as exc:
        print(f"infkernel {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
