"""GET /wplus/v1/info: what an API client can put in the W+ Adapter's alwayson_scripts dict
(adapter files, saved identities, edit directions with their slider ranges)."""
from __future__ import annotations

from modules import script_callbacks, shared

from wplus.webui import api as api_args
from wplus.webui import catalog
from wplus.webui.options import OPTIONS
from wplus.webui.panel import TITLE
from wplus.webui.settings import ExtensionSettings


def info() -> dict:
    settings = ExtensionSettings.from_opts(shared.opts)
    return {
        "script": TITLE,
        "args_keys": sorted(api_args.KEYS),
        "limits": {o.key: [o.minimum, o.maximum] for o in OPTIONS if o.kind in ("int", "float")},
        "adapters": catalog.list_adapters(settings.adapter_dirs()),
        "identities": catalog.list_identities(settings.models_dir),
        "directions": [
            {"name": d.name, "group": d.group, "min": d.minimum, "max": d.maximum, "step": d.step}
            for d in catalog.direction_catalog(settings.models_dir)
        ],
        "models_dir": str(settings.models_dir),
    }


def on_app_started(demo, app) -> None:
    app.add_api_route("/wplus/v1/info", info, methods=["GET"])


script_callbacks.on_app_started(on_app_started)
