"""Leaderboard (placeholder replaced by the full version)."""
