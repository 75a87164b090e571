"""The library inside real training setups: Flax, Orbax checkpoints, multi-device and multi-process runs."""
