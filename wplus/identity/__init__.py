"""Identities: W+ codes saved by name (files), a content-hash cache, and the photo -> W+ encoder.

`from wplus.identity import load_identity, encode_reference, ...` keeps working: the names below are
re-exported from the modules that hold them.
"""
from wplus.identity.cache import (  # noqa: F401
    CACHE_VERSION,
    IdentityCache,
    cache_key,
    default_cache,
)
from wplus.identity.encoder import (  # noqa: F401
    E4ELoader,
    IdentityEncoder,
    default_e4e_loader,
    default_encoder_tag,
    encode_reference,
    faces_table,
    image_to_batch,
)
from wplus.identity.files import (  # noqa: F401
    FORMAT,
    MAX_NAME,
    SUFFIXES,
    THUMBNAIL_SIZE,
    VERSION,
    Identity,
    check_identity_name,
    identities_dir,
    identity_path,
    list_identities,
    load_identity,
    safe_name,
    save_identity,
)
