"""Model backends: ``get_model(settings)`` builds the one the configuration names."""
