"""Front and back doors onto the spine for other tools' formats: NIR (the Neuromorphic
Intermediate Representation) in (``nir_import``: a NIR graph becomes the SNN IR) and out
(``nir_export``: our SNN IR as a NIR graph), ``nir_file`` for guarded reading and atomic writing.
docs/nir.md has the mapping rules."""
from loihi_conv.interop.nir_export import NIRExportError, to_nir, write_nir
from loihi_conv.interop.nir_file import NIRFormatError, read
from loihi_conv.interop.nir_import import NIRImportError, load_nir

__all__ = ["load_nir", "to_nir", "write_nir", "read", "NIRImportError", "NIRExportError", "NIRFormatError"]
