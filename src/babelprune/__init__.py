"""babelprune: prune multilingual language models and measure the cost per language."""

__version__ = "0.1.0"
