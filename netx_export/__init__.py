"""NetX HDF5 files (standard and loihi-conv extension) and Lava processes."""
