"""Script base class, script loading and the ScriptRunner calls the extension relies on.

Like the WebUI: AlwaysVisible scripts get `p.script_args[args_from:args_to]`; every call is wrapped
so a script's exception is reported and swallowed; `ui()` values become the args; infotext fields
and paste field names are collected from each script after `ui()`."""
from __future__ import annotations

import os
import re
import sys
from collections import namedtuple

from modules import errors, paths, script_loading

AlwaysVisible = object()


class PostprocessImageArgs:
    def __init__(self, image):
        self.image = image


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def setup(self, p, *args):
        pass

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        pass

    def before_hr(self, p, *args):
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_image(self, p, pp, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def elem_id(self, item_id):
        need_tabname = self.show(True) == self.show(False)
        tab = ("img2img_" if self.is_img2img else "txt2img_") if need_tabname else ""
        title = re.sub(r"[^a-z_0-9]", "", re.sub(r"\s", "_", self.title().lower()))
        return f"script_{tab}{title}_{item_id}"


ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []
loaded_modules: dict[str, object] = {}  # path -> module (stand-in only, for tests)
current_basedir = paths.script_path


def basedir():
    return current_basedir


def load_scripts(files: list[tuple[str, str]]) -> None:
    """Load (basedir, path) script files in order, as the WebUI does for scripts/ folders: the
    extension's folder is on sys.path only while its file executes."""
    global current_basedir
    scripts_data.clear()
    loaded_modules.clear()
    for base, path in files:
        saved = sys.path
        try:
            sys.path = [base] + sys.path
            current_basedir = base
            module = script_loading.load_module(path)
            loaded_modules[path] = module
            for obj in list(module.__dict__.values()):
                if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
                    scripts_data.append(ScriptClassData(obj, path, base, module))
        except Exception:
            errors.report(f"Error loading script: {os.path.basename(path)}", exc_info=True)
        finally:
            sys.path = saved
            current_basedir = paths.script_path


class ScriptRunner:
    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.alwayson_scripts: list[Script] = []
        self.inputs: list = [None]
        self.infotext_fields: list = []
        self.paste_field_names: list = []

    def initialize_scripts(self, is_img2img: bool) -> None:
        self.scripts.clear()
        self.alwayson_scripts.clear()
        for data in scripts_data:
            script = data.script_class()
            script.filename = data.path
            script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.scripts.append(script)
                self.alwayson_scripts.append(script)

    def setup_ui(self) -> list:
        """Build each always-on script's UI (call inside gr.Blocks) and record its arg range."""
        import gradio as gr

        self.inputs = [None]
        for script in self.alwayson_scripts:
            script.args_from = script.args_to = len(self.inputs)
            with gr.Group() as group:
                controls = script.ui(script.is_img2img)
            script.group = group
            script.controls = controls
            if controls is None:
                continue
            script.name = script.title().lower()
            if script.infotext_fields is not None:
                self.infotext_fields += script.infotext_fields
            if script.paste_field_names is not None:
                self.paste_field_names += script.paste_field_names
            self.inputs += controls
            script.args_to = len(self.inputs)
        return self.inputs

    def default_args(self) -> list:
        return [0] + [c.value for c in self.inputs[1:]]

    def _each(self, method: str, p, *extra, **kwargs) -> None:
        for script in self.alwayson_scripts:
            if getattr(type(script), method) is getattr(Script, method):
                continue
            try:
                args = p.script_args[script.args_from:script.args_to]
                getattr(script, method)(p, *extra, *args, **kwargs)
            except Exception:
                errors.report(f"Error running {method}: {script.filename}", exc_info=True)

    def before_process(self, p): self._each("before_process", p)
    def process(self, p): self._each("process", p)
    def before_process_batch(self, p, **kw): self._each("before_process_batch", p, **kw)
    def process_batch(self, p, **kw): self._each("process_batch", p, **kw)
    def process_before_every_sampling(self, p, **kw): self._each("process_before_every_sampling", p, **kw)
    def before_hr(self, p): self._each("before_hr", p)
    def post_sample(self, p, ps): self._each("post_sample", p, ps)
    def postprocess_image(self, p, pp): self._each("postprocess_image", p, pp)
    def postprocess(self, p, processed): self._each("postprocess", p, processed)

    def script(self, title: str):
        return next((s for s in self.scripts if s.title().lower() == title.lower()), None)


scripts_txt2img: ScriptRunner | None = None
scripts_img2img: ScriptRunner | None = None
