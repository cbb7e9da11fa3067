"""dlx: a config-driven deep-learning experiment runner (Hydra + Keras 3 + TensorBoard + MLflow)."""

__version__ = "0.1.0"
