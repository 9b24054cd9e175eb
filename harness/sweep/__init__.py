"""Sweeps: a grid of runs (``grid``) and one job of it run in a process (``jobs``).

Launchers (plugins, ``cnnbench.launcher.Launcher``) decide where the jobs run. Depends on
``cnnbench.reports`` (records already written), ``cnnbench.training`` and the core.
"""

from cnnbench import deprecated

__getattr__ = deprecated.package_getattr(__name__)  # the 0.1 module of this name
