"""Processing objects and process_images for the stand-in, with the WebUI's script call order:
before_process, process, then per batch before_process_batch / process_batch /
process_before_every_sampling (again before the hires pass, after before_hr), postprocess_image,
and postprocess at the end. As in the WebUI, nothing is called on the scripts when sampling raises:
only `p.close()` runs (the UI and API wrap generation in `contextlib.closing`). Images are the
final latents (no VAE)."""
from __future__ import annotations

import json
from typing import Any

import torch

from modules import infotext_utils, prompt_parser, scripts, sd_samplers, shared
from modules.shared import state


class StableDiffusionProcessing:
    def __init__(self, prompt: str = "a photo of a person", negative_prompt: str = "", seed: int = 1,
                 steps: int = 6, cfg_scale: float = 7.0, width: int = 64, height: int = 64, batch_size: int = 1,
                 n_iter: int = 1, sampler_name: str = "Euler", s_min_uncond: float = 0.0,
                 refiner_checkpoint: str | None = None, refiner_switch_at: float | None = None,
                 override_settings: dict | None = None, **kwargs: Any):
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.seed, self.subseed, self.subseed_strength = seed, -1, 0.0
        self.steps, self.cfg_scale = steps, cfg_scale
        self.width, self.height = width, height
        self.batch_size, self.n_iter = batch_size, n_iter
        self.sampler_name, self.scheduler = sampler_name, "Automatic"
        self.s_min_uncond = s_min_uncond
        self.refiner_checkpoint, self.refiner_switch_at = refiner_checkpoint, refiner_switch_at
        self.refiner_checkpoint_info = None
        self.override_settings = override_settings or {}
        self.extra_generation_params: dict[str, Any] = {}
        self.comments: dict[str, int] = {}
        self.scripts: scripts.ScriptRunner | None = None
        self.script_args: tuple = ()
        self.is_api = False
        self.is_hr_pass = False
        self.enable_hr = False
        self.closed = False
        self.sampler = None
        self.iteration = 0
        self.batch_index = 0
        for k, v in kwargs.items():
            setattr(self, k, v)

    @property
    def sd_model(self):
        return shared.sd_model

    def comment(self, text: str) -> None:
        self.comments[text] = 1

    def close(self) -> None:
        self.sampler = None
        self.closed = True

    def setup_conds(self) -> None:
        dim = shared.sd_model.context_dim
        self.c = prompt_parser.get_multicond(self.prompts, dim)
        self.uc = prompt_parser.get_uncond(self.negative_prompts, dim)

    def noise(self, shape) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(s)) for s in self.seeds])

    def latent_shape(self, scale: float = 1.0):
        return (4, int(self.height * scale) // 8, int(self.width * scale) // 8)


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    def __init__(self, enable_hr: bool = False, hr_scale: float = 2.0, hr_second_pass_steps: int = 0,
                 denoising_strength: float = 0.6, hr_checkpoint_model=None, **kwargs: Any):
        super().__init__(**kwargs)
        self.enable_hr, self.hr_scale = enable_hr, hr_scale
        self.hr_second_pass_steps, self.denoising_strength = hr_second_pass_steps, denoising_strength
        self.hr_checkpoint_model = hr_checkpoint_model

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        x = self.noise(self.latent_shape())
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=x, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        image_cond = x.new_zeros(x.shape[0], 5, 1, 1)
        samples = self.sampler.sample(self, x, conditioning, unconditional_conditioning, image_conditioning=image_cond)
        if not self.enable_hr:
            return samples
        if self.hr_checkpoint_model is not None:
            shared.sd_model = self.hr_checkpoint_model
        return self.sample_hr_pass(samples)

    def sample_hr_pass(self, samples):
        if state.interrupted:
            return samples
        self.is_hr_pass = True
        self.extra_generation_params["Hires upscale"] = self.hr_scale
        samples = torch.nn.functional.interpolate(samples, scale_factor=self.hr_scale, mode="nearest")
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        noise = self.noise(samples.shape[1:])
        if self.scripts is not None:
            self.scripts.before_hr(self)
            self.scripts.process_before_every_sampling(self, x=samples, noise=noise, c=self.c, uc=self.uc)
        image_cond = samples.new_zeros(samples.shape[0], 5, 1, 1)
        samples = self.sampler.sample_img2img(self, samples, noise, self.c, self.uc,
                                              steps=self.hr_second_pass_steps or self.steps,
                                              image_conditioning=image_cond)
        self.is_hr_pass = False
        return samples


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    def __init__(self, init_latent: torch.Tensor | None = None, denoising_strength: float = 0.75,
                 image_cfg_scale: float | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.init_latent, self.denoising_strength = init_latent, denoising_strength
        self.image_cfg_scale = image_cfg_scale

    def sample(self, conditioning, unconditional_conditioning, seeds, subseeds, subseed_strength, prompts):
        self.extra_generation_params["Denoising strength"] = self.denoising_strength
        self.sampler = sd_samplers.create_sampler(self.sampler_name, self.sd_model)
        init = self.init_latent.expand(len(self.seeds), *self.init_latent.shape[1:]).clone()
        self.init_latent = init
        x = self.noise(init.shape[1:])
        if self.scripts is not None:
            self.scripts.process_before_every_sampling(self, x=init, noise=x, c=conditioning,
                                                       uc=unconditional_conditioning)
        return self.sampler.sample_img2img(self, init, x, conditioning, unconditional_conditioning,
                                           steps=self.steps, image_conditioning=init)


class Processed:
    def __init__(self, p: StableDiffusionProcessing, images: list, infotexts: list[str]):
        self.images = images
        self.infotexts = infotexts
        self.info = infotexts[0] if infotexts else ""
        self.comments = "".join(f"{c}\n" for c in p.comments)
        self.extra_generation_params = p.extra_generation_params
        self.seed = p.all_seeds[0] if getattr(p, "all_seeds", None) else p.seed

    def js(self) -> str:
        return json.dumps({"infotexts": self.infotexts, "comments": self.comments,
                           "extra_generation_params": {k: v for k, v in self.extra_generation_params.items()
                                                       if not callable(v)}})


def create_infotext(p: StableDiffusionProcessing, index: int = 0) -> str:
    params = {
        "Steps": p.steps,
        "Sampler": p.sampler_name,
        "CFG scale": p.cfg_scale,
        "Seed": p.all_seeds[index],
        "Size": f"{p.width}x{p.height}",
        "Model hash": p.sd_model.sd_model_hash,
        "Model": p.sd_model.sd_checkpoint_info.name_for_extra,
        **p.extra_generation_params,
    }
    for key, value in list(params.items()):
        if isinstance(value, list):
            params[key] = value[index]
        elif callable(value):
            params[key] = value(p=p, index=index)
    text = ", ".join(k if k == v else f"{k}: {infotext_utils.quote(v)}" for k, v in params.items() if v is not None)
    negative = f"\nNegative prompt: {p.all_negative_prompts[index]}" if p.all_negative_prompts[index] else ""
    return f"{p.all_prompts[index]}{negative}\n{text}".strip()


def process_images(p: StableDiffusionProcessing) -> Processed:
    if p.scripts is not None:
        p.scripts.before_process(p)
    stored = {k: shared.opts.data.get(k) for k in p.override_settings}
    try:
        for k, v in p.override_settings.items():
            setattr(shared.opts, k, v)
        return process_images_inner(p)
    finally:
        for k, v in stored.items():
            setattr(shared.opts, k, v)


def process_images_inner(p: StableDiffusionProcessing) -> Processed:
    total = p.n_iter * p.batch_size
    p.all_prompts = [p.prompt] * total
    p.all_negative_prompts = [p.negative_prompt] * total
    p.all_seeds = [int(p.seed) + i for i in range(total)]
    if p.refiner_checkpoint not in (None, "", "None"):
        p.refiner_checkpoint_info = p.refiner_model.sd_checkpoint_info
    if p.scripts is not None:
        p.scripts.process(p)
    images, infotexts = [], []
    with torch.no_grad():
        for n in range(p.n_iter):
            p.iteration = n
            if state.interrupted:
                break
            sl = slice(n * p.batch_size, (n + 1) * p.batch_size)
            p.prompts, p.negative_prompts, p.seeds = p.all_prompts[sl], p.all_negative_prompts[sl], p.all_seeds[sl]
            if p.scripts is not None:
                p.scripts.before_process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
                p.scripts.process_batch(p, batch_number=n, prompts=p.prompts, seeds=p.seeds, subseeds=p.seeds)
            p.setup_conds()
            samples = p.sample(conditioning=p.c, unconditional_conditioning=p.uc, seeds=p.seeds, subseeds=p.seeds,
                               subseed_strength=0.0, prompts=p.prompts)
            for i, sample in enumerate(samples):
                p.batch_index = i
                index = n * p.batch_size + i
                if p.scripts is not None:
                    pp = scripts.PostprocessImageArgs(sample)
                    p.scripts.postprocess_image(p, pp)
                    sample = pp.image
                images.append(sample)
                infotexts.append(create_infotext(p, index))
    res = Processed(p, images, infotexts)
    if p.scripts is not None:
        p.scripts.postprocess(p, res)
    return res
