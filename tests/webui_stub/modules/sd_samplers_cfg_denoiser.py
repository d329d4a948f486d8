"""CFG denoiser with the WebUI v1.10 batch layout (written for the stand-in from its documented
behaviour):

* rows: every image's cond rows (one per AND sub-prompt) first, then one uncond row per image;
  instruct-pix2pix adds a second uncond block (image-conditioned, then without image);
* `on_cfg_denoiser` sees that full layout before any UNet call;
* uncond rows are dropped after the callback when skip-early-CFG or NGMS apply;
* one UNet call with `batch_cond_uncond`, else chunks of `batch_size` rows; when cond and uncond
  token lengths differ: chunks over the cond rows, then all uncond rows in one call.
"""
from __future__ import annotations

import torch

from modules import shared
from modules.script_callbacks import (
    AfterCFGCallbackParams,
    CFGDenoisedParams,
    CFGDenoiserParams,
    cfg_after_cfg_callback,
    cfg_denoised_callback,
    cfg_denoiser_callback,
)
from modules.sd_samplers_common import InterruptedException
from modules.shared import opts, state


def _repeat_rows(t: torch.Tensor, repeats: list[int]) -> torch.Tensor:
    return torch.cat([t[i:i + 1].expand(n, *t.shape[1:]) for i, n in enumerate(repeats)])


class CFGDenoiser:
    def __init__(self, sampler):
        self.sampler = sampler
        self.step = 0
        self.steps = None
        self.total_steps = None
        self.p = None
        self.image_cfg_scale = None
        self.init_latent = None
        self.unet_calls: list[int] = []  # rows per UNet call, for tests

    def inner_model(self, x, sigma, cond):
        """k-diffusion's eps wrapper around sd_model.apply_model (VP schedule stand-in)."""
        c_in = 1.0 / (sigma ** 2 + 1.0).sqrt()
        t = (sigma * 50.0).clamp(0, 999)
        self.unet_calls.append(x.shape[0])
        eps = shared.sd_model.apply_model(x * c_in[:, None, None, None], t, cond)
        return x - eps * sigma[:, None, None, None]

    def _switch_refiner(self):
        p = self.p
        model = getattr(p, "refiner_model", None)
        at = getattr(p, "refiner_switch_at", None)
        if model is None or at is None or shared.sd_model is model:
            return
        if self.step / self.total_steps >= at:
            shared.sd_model = model
            p.extra_generation_params["Refiner"] = model.sd_checkpoint_info.short_title

    def forward(self, x, sigma, uncond, cond, cond_scale, s_min_uncond, image_cond):
        if state.interrupted or state.skipped:
            raise InterruptedException
        self._switch_refiner()
        model = shared.sd_model
        is_edit = model.cond_stage_key == "edit" and self.image_cfg_scale is not None and self.image_cfg_scale != 1.0
        conds_list, tensor = cond
        batch_size = len(conds_list)
        repeats = [len(c) for c in conds_list]
        if is_edit:
            assert all(n == 1 for n in repeats), "AND is not supported for InstructPix2Pix checkpoint"
        tail = [x, x] if is_edit else [x]
        x_in = torch.cat([_repeat_rows(x, repeats)] + tail)
        sigma_in = torch.cat([_repeat_rows(sigma, repeats)] + [sigma] * len(tail))
        img_tail = [image_cond, torch.zeros_like(self.init_latent)] if is_edit else [image_cond]
        image_cond_in = torch.cat([_repeat_rows(image_cond, repeats)] + img_tail)

        params = CFGDenoiserParams(x_in, image_cond_in, sigma_in, state.sampling_step, state.sampling_steps,
                                   tensor, uncond, self)
        cfg_denoiser_callback(params)
        x_in, image_cond_in, sigma_in = params.x, params.image_cond, params.sigma
        tensor, uncond = params.text_cond, params.text_uncond

        skip_uncond = False
        if opts.skip_early_cond != 0 and self.step / self.total_steps <= opts.skip_early_cond:
            skip_uncond = True
            self.p.extra_generation_params["Skip Early CFG"] = opts.skip_early_cond
        elif (self.step % 2 or opts.s_min_uncond_all) and s_min_uncond > 0 and sigma[0] < s_min_uncond and not is_edit:
            skip_uncond = True
            self.p.extra_generation_params["NGMS"] = s_min_uncond
        if skip_uncond:
            x_in, sigma_in = x_in[:-batch_size], sigma_in[:-batch_size]

        if opts.pad_cond_uncond and tensor.shape[1] != uncond.shape[1]:
            tensor, uncond = self._pad(tensor, uncond)

        def call(a, b, c):
            return self.inner_model(x_in[a:b], sigma_in[a:b], {"c_crossattn": [c], "c_concat": [image_cond_in[a:b]]})

        if tensor.shape[1] == uncond.shape[1] or skip_uncond:
            if is_edit:
                cond_in = torch.cat([tensor, uncond, uncond])
            elif skip_uncond:
                cond_in = tensor
            else:
                cond_in = torch.cat([tensor, uncond])
            if opts.batch_cond_uncond:
                x_out = call(0, x_in.shape[0], cond_in)
            else:
                x_out = torch.zeros_like(x_in)
                for a in range(0, x_out.shape[0], batch_size):
                    x_out[a:a + batch_size] = call(a, a + batch_size, cond_in[a:a + batch_size])
        else:
            assert not is_edit, "stand-in: instruct-pix2pix with prompts of different lengths is not modelled"
            x_out = torch.zeros_like(x_in)
            chunk = batch_size * 2 if opts.batch_cond_uncond else batch_size
            for a in range(0, tensor.shape[0], chunk):
                b = min(a + chunk, tensor.shape[0])
                x_out[a:b] = call(a, b, tensor[a:b])
            if not skip_uncond:
                n = uncond.shape[0]
                x_out[-n:] = call(x_in.shape[0] - n, x_in.shape[0], uncond)

        first_rows = [c[0][0] for c in conds_list]
        if skip_uncond:
            x_out = torch.cat([x_out, torch.cat([x_out[i:i + 1] for i in first_rows])])
        cfg_denoised_callback(CFGDenoisedParams(x_out, state.sampling_step, state.sampling_steps, self.inner_model))

        if is_edit:
            out_cond, out_img_cond, out_uncond = x_out.chunk(3)
            denoised = (out_uncond + cond_scale * (out_cond - out_img_cond)
                        + self.image_cfg_scale * (out_img_cond - out_uncond))
        else:
            scale = 1.0 if skip_uncond else cond_scale
            d_uncond = x_out[-uncond.shape[0]:]
            denoised = d_uncond.clone()
            for i, conds in enumerate(conds_list):
                for row, weight in conds:
                    denoised[i] += (x_out[row] - d_uncond[i]) * (weight * scale)

        params_after = AfterCFGCallbackParams(denoised, state.sampling_step, state.sampling_steps)
        cfg_after_cfg_callback(params_after)
        self.step += 1
        return params_after.x

    @staticmethod
    def _pad(tensor, uncond):
        empty = shared.sd_model.cond_stage_model_empty_prompt
        diff = (tensor.shape[1] - uncond.shape[1]) // empty.shape[0]
        if diff < 0:
            tensor = torch.cat([tensor, empty.repeat(tensor.shape[0], -diff, 1)], 1)
        elif diff > 0:
            uncond = torch.cat([uncond, empty.repeat(uncond.shape[0], diff, 1)], 1)
        return tensor, uncond
