"""Run bookkeeping, the bottom layer every package may use: crash-safe writes and the rerun rule
(`bookkeeping.io`), one-line errors for bad config values (`bookkeeping.checks`). Imports no package of
the project."""
