"""hvuio: a user-space netvsc driver for Hyper-V / Azure synthetic NICs, and its host emulator."""

__version__ = "0.1.0"
