"""vmpod: Docker-style containers, each in its own virtual machine."""

__version__ = "0.1.0"
