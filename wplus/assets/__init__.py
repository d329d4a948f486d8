"""Model files: the registry of upstream weights, downloads, and safe loading of pickles/safetensors."""
