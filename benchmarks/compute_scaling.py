"""Compute scaling report (the paper's Figure 3): ``python benchmarks/compute_scaling.py``.

Same as ``tsf scaling``; see :mod:`lightning_tsf.viz.scaling` for the method and options.
"""

import sys

from lightning_tsf.viz.scaling import main

if __name__ == "__main__":
    sys.exit(main())
