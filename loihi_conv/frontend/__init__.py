"""nn.Module -> float IR: the IR itself (``ir``), its ANN semantics (``ops``), torch.fx tracing,
BatchNorm folding, ``prepare`` (all three), and the QReLU activation."""
