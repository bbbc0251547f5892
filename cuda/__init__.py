"""CUDA C sources of the GPU backend, read at run time by ``infkernel.gpu``.

Installed as ``infkernel.cuda``.  When the repository root is on ``sys.path``
this folder is also importable as a top-level ``cuda`` package, which would
hide NVIDIA's ``cuda`` namespace package (``cuda.pathfinder``, needed by CuPy);
extending ``__path__`` keeps both importable.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
