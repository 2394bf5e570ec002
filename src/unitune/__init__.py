"""unitune: text-driven single-image editing by fine-tuning text-to-image diffusion models."""

__version__ = "0.1.0"
