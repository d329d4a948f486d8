import importlib.util
import os


def load_module(path: str):
    """Load a script file as the WebUI does: module named by its file name, executed in isolation."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
