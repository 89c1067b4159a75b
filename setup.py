import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "README.md"), encoding="utf-8") as fh:
    README = fh.read()

setup(
    name="avb-minimal",
    version="0.1.0",
    description="Adversarial Variational Bayes (Mescheder et al., ICML 2017) in NumPy + autograd, written to be read",
    long_description=README,
    long_description_content_type="text/markdown",
    # The CUDA sources live in the top-level kernels/ folder and install as the data
    # package avb_minimal.kernels (backend.kernels_dir() finds them in either place).
    packages=find_packages(include=["avb_minimal", "avb_minimal.*"]) + ["avb_minimal.kernels"],
    package_dir={"avb_minimal.kernels": "kernels"},
    package_data={"avb_minimal.kernels": ["*.cu", "*.cuh", "*.h"]},
    license="MIT",
    author="avb-minimal contributors",
    # Floors tested together on Python 3.10: numpy 1.24.0, scipy 1.9.0, matplotlib 3.5.0,
    # autograd 1.9.1, pytest 7.0.0.  autograd 1.6 fails to import under NumPy 2, and before
    # 1.9.1 numpy's own reductions (np.sum of a traced array) raise inside grad; autograd
    # 1.9 needs Python 3.10.
    python_requires=">=3.10",
    install_requires=["numpy>=1.24", "autograd>=1.9.1", "matplotlib>=3.5", "scipy>=1.9"],
    # the GPU path: cupy built for the machine's CUDA major version (nvidia-smi prints it)
    extras_require={"cuda13": ["cupy-cuda13x>=13"], "cuda12": ["cupy-cuda12x>=13"], "test": ["pytest>=7", "pytest-xdist>=3"]},
    entry_points={"console_scripts": ["avb-minimal=avb_minimal.__main__:main"]},
)
