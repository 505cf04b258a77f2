"""Custom Lava processes and their models.

They live in their own package on purpose: Lava's compiler looks for ProcessModels by
re-executing every module in the directory (and parent package) of a Process's module
(magma/compiler/compiler_graphs.py:795-900); keeping this package to these few small modules keeps
that scan fast and free of spurious import warnings.

* ``softif_process``: the SoftIF neuron (extension), fixed and float models.
* ``mmapio``: memory-mapped input source and recorders (fast host I/O).
* ``pool``: the spiking max-pool stage (extension, ``qir.SpikePool``) between a source's
  ``s_out`` and a synapse's ``s_in``, fixed-point model.
* ``samplereset``: resets every state and synapse buffer between samples, in-graph.
"""
from netx_export.lava_env import prepare as _prepare

_prepare()  # before the submodules import Lava
