"""A no-op Flower app: Flower's floor for the platform's message patterns (see pyproject.toml)."""
