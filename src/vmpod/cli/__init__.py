"""Command lines: `vmpod` (Docker's verbs)."""
