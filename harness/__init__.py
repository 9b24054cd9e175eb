"""cnnbench core: hook specifications, plugin discovery, training and run records.

Importing this package is cheap on purpose: torch is imported only by the modules
that train or build models, so ``bench --help`` and ``bench list`` stay fast.
"""

from .hookspecs import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
