"""netdev layer of hvuio: the Linux side of a running NIC (see each module's docstring)."""
