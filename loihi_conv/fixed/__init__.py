"""SNN IR -> fixed-point IR: ``qir`` (integer networks), ``quantize/`` (one file per target),
``softif_modes/`` (the integer halves of the SoftIF neuron models), worst-case ranges, and the
encode/decode of a fixed-point run shared by the emulator and the Lava runner."""
