from setuptools import setup

setup(
    name="infkernel",
    version="0.1.0",
    description="Analytic infinite-width NNGP and NTK kernels of neural networks, "
                "fused on CPU (numba) and GPU (CuPy)",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=["infkernel", "infkernel.cuda"],
    # The CUDA C sources live in the top-level cuda/ folder and ship inside
    # the package as infkernel/cuda, read at run time by infkernel.gpu.
    package_dir={"infkernel.cuda": "cuda"},
    package_data={"infkernel.cuda": ["*.cu", "*.cuh"]},
    # numba 0.57 and 0.58 compile the CPU kernels too, but five times slower
    # (first call of a ReLU network: 150-160 s against 33 s for 0.59)
    install_requires=["numpy>=1.22", "scipy>=1.8", "numba>=0.59", "tqdm",
                      "threadpoolctl>=3", "scikit-learn>=1.6", "matplotlib>=3.5"],
    extras_require={
        # [ctk]: NVRTC (RawModule) and cuBLAS (cupy.matmul) from PyPI, when no
        # CUDA Toolkit is installed (the plain wheel ships neither)
        "gpu": ["cupy-cuda13x[ctk]>=14"],
        "torch": ["torch"],
        # NVRTC (no GPU needed) compiles the CUDA sources as CuPy does, in tests
        "test": ["pytest>=7", "hypothesis>=6", "mpmath",
                 'nvidia-cuda-nvrtc; platform_system == "Linux" and platform_machine == "x86_64"'],
    },
    entry_points={"console_scripts": ["infkernel=infkernel.cli:main"]},
)
