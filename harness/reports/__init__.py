"""Reading results: the leaderboard's model (``leaderboard``) apart from its renderers (``render``),
the HTML components (``html``) and the static site (``site``, ``plots``), and per-run reports
(``runs``). Depends on ``cnnbench.training`` (only to rebuild a model for misclassified images)
and the core; never imports torch at import time.
"""

from cnnbench import deprecated

__getattr__ = deprecated.package_getattr(__name__)  # the 0.1 module of this name
