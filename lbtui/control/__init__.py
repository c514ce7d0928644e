"""The control plane: admin API, metrics, and the Control interface the consoles use."""
