"""The trainer: Petastorm feed from Delta, training loop, evaluation and export."""
