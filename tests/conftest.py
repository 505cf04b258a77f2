"""Suite-wide setup.

Lava fixes multiprocessing's start method ('fork') when its runtime is first imported and
raises if anything else fixed it before (torch DataLoaders do); importing it first keeps every
later Lava import in the session working, whatever order the tests run in.
"""
from netx_export.lava_env import prepare

prepare()
import lava.magma.runtime.message_infrastructure.multiprocessing  # noqa: E402,F401
