"""Token tagging tasks (being written)."""
