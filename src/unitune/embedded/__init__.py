"""The embedded default text-to-image model: architecture, training and evaluation."""
