"""Float spiking neuron models for the float SNN simulator, one file each, registered by name.

``neuron_model`` holds the skeleton (``NeuronModel``) and the registry; importing this package imports
every model file, so every name is registered. Adding a model: a file here with a
``@register_neuron("name")`` class (its float semantics) -- and, to run it in fixed point, one
in ``loihi_conv/fixed/softif_modes/`` (docs/architecture.md, "Adding a neuron model").
"""
# the skeleton first: the model files register into its NEURON_MODELS (spicalib builds on the others).
from loihi_conv.snn.neurons.neuron_model import (  # noqa: F401  (the package's API)
    NEURON_MODELS, MultiUnit, NeuronModel, State, Tensor, adjust, channel_view, floor_ste,
    get_neuron_model, has_count_curve, int_param, max_units, register_neuron, threshold_scale)

from loihi_conv.snn.neurons import if_soft, if_zero, if_burst, if_multibit, if_buffered  # noqa: E402,F401,I001
from loihi_conv.snn.neurons import spicalib  # noqa: E402,F401,I001
from loihi_conv.snn.neurons import cuba_lif  # noqa: E402,F401,I001
