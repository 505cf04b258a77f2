"""The tool around the spine: the CLI (``cli``, ``commands/``), model and data sources, the
zoo and its training, the end-to-end pipeline, QReLU fine-tuning, reports, ``inspect``'s resource
estimate and the emulator-vs-Lava ``verify``."""
