"""Stand-in for ADetailer's (Bing-su/adetailer v25.3.0) behaviour towards other scripts, written
for the tests from reading its `scripts/!adetailer.py` (no code taken from it):

* `postprocess_image` of image i: on the first image of a batch it calls every always-on script's
  `postprocess()` on a shallow copy of `p`; then for each detected face j it builds an img2img
  processing object (batch size 1, denoising 0.4, seed all_seeds[i] + j, `_ad_inner` and
  `_ad_disabled` set, the generation's extra params copied, script args shallow-copied) whose
  script runner keeps only the always-on scripts whose file stem is in `ad_script_names` (while
  `ad_only_selected_scripts` is on), runs `process_images` on a copy of it and closes it, each face
  starting from the previous result; on the last image of a batch it calls every always-on
  script's `before_process()` and `process()` on another shallow copy of `p`.
* Detection is replaced by a face count given in the panel args: (enabled, faces).
"""
from __future__ import annotations

from copy import copy
from pathlib import Path

from modules import processing, scripts, shared

DEFAULT_NAMES = "dynamic_prompting,dynamic_thresholding,lora_block_weight,negpip,wildcard_recursive,wildcards"
BUILTIN = "hypertile_script,soft_inpainting"


class ADetailerStandIn(scripts.Script):
    passes: list = []  # (image index, face j, the inner processing object) for tests

    def title(self):
        return "ADetailer"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def ui(self, is_img2img):
        import gradio as gr

        return [gr.Checkbox(value=False, label="Enable ADetailer"), gr.Number(value=1, precision=0, label="faces")]

    def postprocess_image(self, p, pp, enabled=False, faces=1):
        if not enabled or getattr(p, "_ad_disabled", False):
            return
        if p.batch_index == 0:
            p.scripts.postprocess(copy(p), processing.Processed(p, [], []))
        i = p.iteration * p.batch_size + p.batch_index
        image = pp.image
        for j in range(int(faces)):
            inner = processing.StableDiffusionProcessingImg2Img(
                init_latent=image[None], denoising_strength=0.4, prompt=p.prompt, negative_prompt=p.negative_prompt,
                seed=p.all_seeds[i] + j, steps=p.steps, cfg_scale=p.cfg_scale, width=p.width, height=p.height,
                batch_size=1, n_iter=1, sampler_name=p.sampler_name,
                extra_generation_params={k: v for k, v in p.extra_generation_params.items() if not callable(v)})
            inner.scripts, inner.script_args = self.script_filter(p)
            inner._ad_disabled = True
            inner._ad_inner = True
            p2 = copy(inner)
            try:
                result = processing.process_images(p2)
            finally:
                p2.close()
            ADetailerStandIn.passes.append((i, j, p2))
            image = result.images[0]
        pp.image = image
        if p.batch_index == p.batch_size - 1:
            copy_p = copy(p)
            p.scripts.before_process(copy_p)
            p.scripts.process(copy_p)

    @staticmethod
    def script_filter(p):
        runner = copy(p.scripts)
        args = tuple(copy(a) for a in p.script_args)
        if not shared.opts.data.get("ad_only_selected_scripts", True):
            return runner, args
        names = shared.opts.data.get("ad_script_names", DEFAULT_NAMES).split(",") + BUILTIN.split(",")
        keep = {n.strip() for n in names}
        runner.alwayson_scripts = [s for s in runner.alwayson_scripts if Path(s.filename).stem in keep]
        return runner, args
