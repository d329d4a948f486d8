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


class DirectionError(WPlusError):
    """An unknown edit direction name, or a direction file of a shape/format we cannot use."""


class IdentityFormatError(WPlusError):
    """An identity file (ours or an official `N.pth`) that is corrupt or holds no (18,512) W+ code."""


class DownloadError(WPlusError):
    """A download that failed or produced a file whose sha256 does not match the registry."""


class E4EFormatError(WPlusError):
    """An e4e/StyleGAN2 checkpoint that is corrupt, truncated, or holds another model's weights."""


class IdentityNotFoundError(WPlusError):
    """No saved identity of that name; the message lists the ones that exist."""
