"""sim layer of hvuio (see each module's docstring)."""
