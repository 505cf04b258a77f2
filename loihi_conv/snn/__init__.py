"""Float SNN semantics on the SNN IR: neuron models (``neurons/``, one file each), spiking
max-pool schemes, output readouts, and the batched float simulator."""
