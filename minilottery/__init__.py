"""minilottery: find lottery tickets with a NumPy + Numba framework you can read.

The lottery ticket hypothesis (Frankle & Carbin, ICLR 2019): a dense, randomly
initialised network contains a sparse subnetwork that, reset to its original
initial weights and trained alone, matches the full network's test accuracy in
no more iterations. See README.md for the map of the package.
"""

__version__ = "0.1.0"

from . import threads  # noqa: E402,F401  (first: it must configure OpenBLAS before NumPy loads it)
