"""An independent re-implementation of the paper's inference path (csxmli2016/w-plus-adapter), written
from reading `w_plus_adapter/attention_processor.py`, `w_plus_adapter.py` (`generate_idnoise`) and
`wplus_pipeline.py` — not copied, and deliberately *not* using wplus.branch, so that the tests compare
our hook-based branch against the paper's design:

- every cross-attention gets a processor that splits the last 4 context tokens off as the W+
  tokens, runs the normal text attention on the rest, then adds λ·attention(to_q_wplus(h),
  to_k_wplus(T), to_v_wplus(T)) before `to_out`;
- the W+ tokens are concatenated to the prompt embeddings (the identity's for the prompt, an
  all-zero W+'s for the negative prompt) and the batch is [negative, positive];
- the sampling loop sets λ to 0 at every step i <= min(int(start/100·steps), 30).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_TOKENS = 4


class PaperProjection(nn.Module):
    """W+ (B,18,512) -> 4 tokens: a linear per layer group [0:4], [4:8], [8:12], [12:18], then LayerNorm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.bounds = [0, 4, 8, 12, 18]
        for i in range(4):
            setattr(self, f"proj_{i}", nn.Linear(512 * (self.bounds[i + 1] - self.bounds[i]), dim, bias=False))
        self.norm = nn.LayerNorm(dim)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        b = w.shape[0]
        parts = [getattr(self, f"proj_{i}")(w[:, self.bounds[i]:self.bounds[i + 1]].reshape(b, -1)).unsqueeze(1)
                 for i in range(4)]
        return self.norm(torch.cat(parts, dim=1))


class PlainProcessor(nn.Module):
    """Self-attention (attn1), as the paper's AttnProcessor2_0 (no weights)."""

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return _attend(attn, hidden_states, encoder_hidden_states, None)


class PaperWPlusProcessor(nn.Module):
    """Cross-attention with the residual W+ attention; weights named as in the official file."""

    def __init__(self, hidden: int, context: int) -> None:
        super().__init__()
        self.scale = 1.0
        self.to_q_wplus = nn.Linear(hidden, hidden, bias=False)
        self.to_k_wplus = nn.Linear(context, hidden, bias=False)
        self.to_v_wplus = nn.Linear(context, hidden, bias=False)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kw):
        return _attend(attn, hidden_states, encoder_hidden_states, self)


def _heads(x: torch.Tensor, b: int, heads: int) -> torch.Tensor:
    return x.view(b, -1, heads, x.shape[-1] // heads).transpose(1, 2)


def _merge(x: torch.Tensor, b: int) -> torch.Tensor:
    return x.transpose(1, 2).reshape(b, -1, x.shape[1] * x.shape[3])


def _attend(attn, hidden_states, context, wplus: PaperWPlusProcessor | None):
    residual = hidden_states
    four_d = hidden_states.ndim == 4
    if four_d:
        b, c, hh, ww = hidden_states.shape
        hidden_states = hidden_states.view(b, c, hh * ww).transpose(1, 2)
    b = hidden_states.shape[0]
    if attn.group_norm is not None:
        hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
    query = attn.to_q(hidden_states)
    tokens = None
    if context is None:
        context = hidden_states
    elif wplus is not None:
        context, tokens = context[:, :-NUM_TOKENS], context[:, -NUM_TOKENS:]
    if attn.norm_cross:
        context = attn.norm_encoder_hidden_states(context)
    key, value = attn.to_k(context), attn.to_v(context)
    h = F.scaled_dot_product_attention(_heads(query, b, attn.heads), _heads(key, b, attn.heads),
                                       _heads(value, b, attn.heads))
    h = _merge(h, b).to(query.dtype)
    if wplus is not None:
        q2 = _heads(wplus.to_q_wplus(h), b, attn.heads)
        k2 = _heads(wplus.to_k_wplus(tokens), b, attn.heads)
        v2 = _heads(wplus.to_v_wplus(tokens), b, attn.heads)
        r = _merge(F.scaled_dot_product_attention(q2, k2, v2), b).to(query.dtype)
        h = h + wplus.scale * r
    out = attn.to_out[1](attn.to_out[0](h))
    if four_d:
        out = out.transpose(-1, -2).reshape(b, c, hh, ww)
    if attn.residual_connection:
        out = out + residual
    return out / attn.rescale_output_factor


class PaperPipeline:
    """The paper's `WPlusAdapter` + `StableDiffusionWPlusPipeline` on an SD1.x diffusers pipeline."""

    def __init__(self, pipe, state: dict) -> None:
        self.pipe = pipe
        unet = pipe.unet
        dim = unet.config.cross_attention_dim
        procs = {}
        for name, proc in unet.attn_processors.items():
            if name.endswith("attn1.processor"):
                procs[name] = PlainProcessor()
            else:
                attn = unet.get_submodule(name.removesuffix(".processor"))
                procs[name] = PaperWPlusProcessor(attn.to_q.out_features, dim)
        self._original = dict(unet.attn_processors)
        unet.set_attn_processor(procs)
        nn.ModuleList(unet.attn_processors.values()).load_state_dict(state["wplus_adapter"])
        self.proj = PaperProjection(dim)
        self.proj.load_state_dict(state["w_proj"])
        device, dtype = unet.device, unet.dtype
        self.proj.to(device, dtype)
        for p in unet.attn_processors.values():
            p.to(device, dtype)

    def restore(self) -> None:
        self.pipe.unet.set_attn_processor(self._original)

    def _set_scale(self, scale: float) -> None:
        for p in self.pipe.unet.attn_processors.values():
            if isinstance(p, PaperWPlusProcessor):
                p.scale = scale

    @torch.no_grad()
    def generate(self, prompt: str, negative_prompt: str, w: torch.Tensor, scale: float, seed: int,
                 guidance: float = 7.5, steps: int = 30, start: float = 20, height=None, width=None):
        """One image (as `generate_idnoise` with num_samples=1), returned as a PIL image."""
        pipe = self.pipe
        device = pipe.device
        w = w.to(device, pipe.unet.dtype).reshape(1, 18, 512)
        tok, tok_zero = self.proj(w), self.proj(torch.zeros_like(w))
        pos, neg = pipe.encode_prompt(prompt, device, 1, True, negative_prompt)
        context = torch.cat([torch.cat([neg, tok_zero], 1), torch.cat([pos, tok], 1)])
        generator = torch.Generator(device).manual_seed(seed)
        height = height or pipe.unet.config.sample_size * pipe.vae_scale_factor
        width = width or pipe.unet.config.sample_size * pipe.vae_scale_factor
        pipe.scheduler.set_timesteps(steps, device=device)
        latents = pipe.prepare_latents(1, pipe.unet.config.in_channels, height, width, context.dtype, device,
                                       generator)
        extra = pipe.prepare_extra_step_kwargs(generator, 0.0)
        first = min(int(float(start) / 100 * steps), 30)
        for i, t in enumerate(pipe.scheduler.timesteps):
            x = pipe.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            self._set_scale(0.0 if i <= first else scale)
            eps = pipe.unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
            uncond, cond = eps.chunk(2)
            latents = pipe.scheduler.step(uncond + guidance * (cond - uncond), t, latents, **extra,
                                          return_dict=False)[0]
        image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False, generator=generator)[0]
        return pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=[True])[0]
