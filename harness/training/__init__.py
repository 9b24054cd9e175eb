"""Training: from a plan to run records.

``plan`` resolves names into a frozen ``RunPlan``; ``train`` (one seed) and ``fused`` (several seeds
as one computation) run the epoch loop, writing checkpoints (``checkpoint``) that ``resume``
continues; ``runner`` runs a plan's seeds; ``speed`` times the bare step; ``summary`` tables a model.
Depends only on the core (``cnnbench.*`` top-level modules). Importing this package is cheap: its
modules import torch themselves.
"""
