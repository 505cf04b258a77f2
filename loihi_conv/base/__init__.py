"""What every layer may use: errors, registries, atomic files, PyTorch <-> Lava layouts and the
Loihi 2 limits (``limits``: the one home of every hardware number). Imports nothing of ours."""
