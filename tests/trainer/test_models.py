"""Base models for training: a single-file WebUI checkpoint (ldm layout) converted offline, and a
tiny SDXL (two text encoders, added time/pooled conditioning) through a training step."""
from __future__ import annotations

import json

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from torch import nn

from conftest import FIXTURES, OFFICIAL
from wplus.assets.checkpoint import detect_arch, load_base_model

E4E = OFFICIAL / "test_data" / "e4e"
DD = {"double_z": True, "z_channels": 4, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
      "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}


class LdmVAE(nn.Module):
    """The WebUI runtime's VAE parts (ldm Encoder/Decoder + quant convs), keyed like a checkpoint."""

    def __init__(self):
        super().__init__()
        from ldm.modules.diffusionmodules.model import Decoder, Encoder
        self.encoder, self.decoder = Encoder(**DD), Decoder(**DD)
        self.quant_conv = nn.Conv2d(8, 8, 1)
        self.post_quant_conv = nn.Conv2d(4, 4, 1)

    def decode(self, z):
        return self.decoder(self.post_quant_conv(z))

    def encode_mean(self, x):
        return self.quant_conv(self.encoder(x)).chunk(2, dim=1)[0]


@pytest.fixture(scope="module")
def single_file(tmp_path_factory, shared_dir):
    """A WebUI-style SD1 checkpoint: fixture ldm UNet + ldm VAE + CLIP text model, one .safetensors."""
    from transformers import CLIPTextConfig, CLIPTextModel
    root = tmp_path_factory.mktemp("single")
    torch.manual_seed(0)
    vae = LdmVAE().eval()
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=1, max_position_embeddings=77,
                                        hidden_act="quick_gelu")).eval()
    ckpt = dict(load_file(str(FIXTURES / "reference_sd15" / "unet_ldm.safetensors")))
    ckpt.update({f"first_stage_model.{k}": v for k, v in vae.state_dict().items()})
    ckpt.update({f"cond_stage_model.transformer.{k}": v for k, v in text.state_dict().items()})
    save_file({k: v.contiguous() for k, v in ckpt.items()}, str(root / "tiny-sd1.safetensors"))
    ldm_unet = json.loads((FIXTURES / "reference_sd15" / "config.json").read_text())["ldm_unet"]
    cfg = {"model": {"params": {"linear_start": 0.00085, "linear_end": 0.012, "timesteps": 1000,
                                "scale_factor": 0.18215,
                                "unet_config": {"params": ldm_unet},
                                "first_stage_config": {"params": {"embed_dim": 4, "ddconfig": DD}}}}}
    (root / "tiny-sd1.yaml").write_text(yaml.safe_dump(cfg))
    return root, vae, text


def test_single_file_checkpoint_loads_offline_and_matches(single_file):
    root, ldm_vae, text = single_file
    base = load_base_model(str(root / "tiny-sd1.safetensors"), original_config=str(root / "tiny-sd1.yaml"),
                           cache_dir=root)
    assert base.arch == "sd1" and len(base.tokenizers[0]) == 49408
    io = load_file(str(FIXTURES / "reference_sd15" / "io.safetensors"))
    ctx = torch.cat([io["text_cond"], io["text_uncond"]])
    with torch.no_grad():
        eps = base.unet(io["x"], io["timesteps"], encoder_hidden_states=ctx).sample
    assert (eps - io["eps_ldm_no_adapter"]).abs().max() < 1e-4  # the WebUI runtime's output
    g = torch.Generator().manual_seed(1)
    z, x = torch.randn(1, 4, 8, 8, generator=g), torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    with torch.no_grad():
        assert (base.vae.decode(z).sample - ldm_vae.decode(z)).abs().max() < 1e-4
        assert (base.vae.encode(x).latent_dist.mean - ldm_vae.encode_mean(x)).abs().max() < 1e-4
        ids = base.tokenizers[0](["a photo of a face"], padding="max_length", max_length=77,
                                 return_tensors="pt").input_ids
        assert torch.allclose(base.text_encoders[0](ids)[0], text(ids)[0], atol=1e-5)
    assert base.scheduler.config.prediction_type == "epsilon"
    assert not any(p.requires_grad for p in base.unet.parameters())


def test_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="not a Stable Diffusion checkpoint"):
        detect_arch({"foo.weight": torch.zeros(1)})
    save_file({"cond_stage_model.transformer.x": torch.zeros(1)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="no UNet weights"):
        load_base_model(str(tmp_path / "x.safetensors"))
    with pytest.raises(FileNotFoundError, match="diffusers folder"):
        load_base_model(str(tmp_path / "nothing"))
    (tmp_path / "folder").mkdir()
    with pytest.raises(FileNotFoundError, match="unet/ is missing"):
        load_base_model(str(tmp_path / "folder"))
    assert detect_arch({"conditioner.embedders.1.model.ln_final.weight": 0}) == "sdxl"
    assert detect_arch({"cond_stage_model.model.ln_final.weight": 0}) == "sd2"


def _tiny_sdxl(folder):
    """An SDXL-shaped diffusers folder: text_time conditioning, two CLIP text encoders (16 + 24 = 40)."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from wplus.assets.checkpoint import write_clip_tokenizer
    torch.manual_seed(0)
    cfg = json.loads((FIXTURES / "reference_sdxl" / "config.json").read_text())["diffusers_unet"]
    cfg.update(addition_embed_type="text_time", addition_time_embed_dim=8,
               projection_class_embeddings_input_dim=24 + 6 * 8)
    UNet2DConditionModel(**cfg).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=[8, 16, 16, 16], down_block_types=["DownEncoderBlock2D"] * 4,
                  up_block_types=["UpDecoderBlock2D"] * 4, norm_num_groups=8, layers_per_block=1,
                  latent_channels=4).save_pretrained(folder / "vae")
    common = dict(vocab_size=49408, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                  max_position_embeddings=77)
    CLIPTextModel(CLIPTextConfig(hidden_size=16, hidden_act="quick_gelu", **common)
                  ).save_pretrained(folder / "text_encoder")
    CLIPTextModelWithProjection(CLIPTextConfig(hidden_size=24, projection_dim=24, hidden_act="gelu", **common)
                                ).save_pretrained(folder / "text_encoder_2")
    write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012
                  ).save_pretrained(folder / "scheduler")
    return folder


@pytest.mark.needs_shared
def test_sdxl_training_step_uses_both_text_encoders_and_time_ids(tmp_path):
    from trainer.config import TrainConfig
    from trainer.engine import run
    sd = _tiny_sdxl(tmp_path / "sdxl")
    base = load_base_model(str(sd))
    assert base.arch == "sdxl" and len(base.text_encoders) == 2
    ctx, added = base.encode_prompt(["a photo of a face", ""], 64)
    assert ctx.shape == (2, 77, 40) and added["text_embeds"].shape == (2, 24)
    assert added["time_ids"].tolist()[0] == [64, 64, 0, 0, 64, 64]
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "aligned": str(E4E / f"{i}.png"),
                                            "wplus": str(E4E / f"{i}.pth")}) + "\n" for i in (1, 2)))
    trainer = run(TrainConfig(stage=1, pretrained_model=str(sd), manifest=str(manifest), resolution=64,
                              train_batch_size=2, max_steps=2, mixed_precision="no", output_dir=str(tmp_path / "out"),
                              report_to="none", progress=False, checkpoint_every=0, validation_every=2,
                              validation_steps=2))
    assert len(trainer.history) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in trainer.history)
    assert (tmp_path / "out" / "samples" / "step-0000002.png").is_file()  # SDXL sampling with time ids
    import wplus
    exported = wplus.load_adapter(tmp_path / "out" / "wplus_adapter.safetensors")
    from wplus.branch.layers import cross_attention_layers
    n = len(cross_attention_layers(base.unet))
    assert len(exported.layers) == len(trainer.adapter.layers) == n > 16 and exported.context_dim == 40


def test_sd2_open_clip_text_tower_converts(tmp_path):
    """SD2 checkpoints hold an OpenCLIP text tower (fused in_proj, c_fc/c_proj, positional_embedding)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from wplus.assets.checkpoint import _open_clip_text
    torch.manual_seed(0)
    hf = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=1, max_position_embeddings=77, hidden_act="gelu")).eval()
    s = {k.removeprefix("text_model."): v for k, v in hf.state_dict().items()}  # transformers 4 and 5 layouts
    p = "cond_stage_model.model."
    sd = {p + "token_embedding.weight": s["embeddings.token_embedding.weight"],
          p + "positional_embedding": s["embeddings.position_embedding.weight"],
          p + "ln_final.weight": s["final_layer_norm.weight"],
          p + "ln_final.bias": s["final_layer_norm.bias"]}
    for i in range(2):
        h, o = f"encoder.layers.{i}.", f"{p}transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            sd[o + f"attn.in_proj_{kind}"] = torch.cat([s[h + f"self_attn.{x}_proj.{kind}"] for x in "qkv"])
            sd[o + f"attn.out_proj.{kind}"] = s[h + f"self_attn.out_proj.{kind}"]
            sd[o + f"ln_1.{kind}"], sd[o + f"ln_2.{kind}"] = s[h + f"layer_norm1.{kind}"], s[h + f"layer_norm2.{kind}"]
            sd[o + f"mlp.c_fc.{kind}"] = s[h + f"mlp.fc1.{kind}"]
            sd[o + f"mlp.c_proj.{kind}"] = s[h + f"mlp.fc2.{kind}"]
    ours = _open_clip_text(CLIPTextModel, sd, p).eval()
    ids = torch.randint(0, 49406, (2, 77))
    with torch.no_grad():
        assert torch.allclose(ours(ids)[0], hf(ids)[0], atol=1e-5)
    assert detect_arch(sd) == "sd2"
