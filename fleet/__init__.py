"""fleet: online post-training of Vision-Language-Action robot policies across a robot fleet."""

__version__ = "0.1.0"
