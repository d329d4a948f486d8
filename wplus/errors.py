"""Exceptions with messages meant for the user: each says what is wrong and what to do."""
from __future__ import annotations


class WPlusError(Exception):
    """Base class: anything the extension shows to the user as a clear message."""


class AdapterFormatError(WPlusError):
    """An adapter file that is corrupt, of an unknown layout, or made for another model family."""


class IncompatibleModelError(WPlusError):
    """The adapter does not fit the loaded UNet (e.g. an SD1.5 adapter on SDXL)."""


class FaceNotFoundError(WPlusError):
    """No usable face in the reference image."""


class MultipleFacesError(WPlusError):
    """Several faces and no index chosen where one was required."""


class ImageInputError(WPlusError):
    """The reference is not a readable image."""


class MissingWeightsError(WPlusError):
    """A weights file is absent; the message names the file, its URL and the folder to put it in."""
