"""Results anyone can re-check: ``bench verify`` trains a recorded run again and compares every
number (``replay``), the verification files beside the records (``store``), and the results check
that validates a results folder without training (``check``).

Depends on ``cnnbench.training`` and the core; ``cnnbench.reports`` reads the verification files
for the leaderboard's "verified" column.
"""
