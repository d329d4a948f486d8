"""The UI/API entry: generation inside `contextlib.closing(p)`, so `p.close()` runs even when
sampling raises (scripts' postprocess does not)."""
from contextlib import closing

from modules import processing


def run(p):
    with closing(p):
        return processing.process_images(p)
