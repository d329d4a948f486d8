"""Stand-in for ComfyUI's ModelPatcher: clones share the model and deep-copy model_options."""
from __future__ import annotations

import copy


def set_model_options_patch_replace(model_options: dict, patch, name: str, block_name: str, number: int,
                                    transformer_index: int | None = None) -> dict:
    to = model_options["transformer_options"].copy()
    to["patches_replace"] = dict(to.get("patches_replace", {}))
    to["patches_replace"][name] = dict(to["patches_replace"].get(name, {}))
    key = (block_name, number, transformer_index) if transformer_index is not None else (block_name, number)
    to["patches_replace"][name][key] = patch
    model_options["transformer_options"] = to
    return model_options


class ModelPatcher:
    def __init__(self, model, load_device="cpu", offload_device="cpu"):
        self.model = model
        self.load_device, self.offload_device = load_device, offload_device
        self.model_options = {"transformer_options": {}}
        self.object_patches: dict = {}
        self.parent = None

    def clone(self) -> "ModelPatcher":
        n = ModelPatcher(self.model, self.load_device, self.offload_device)
        n.model_options = copy.deepcopy(self.model_options)
        n.object_patches = self.object_patches.copy()
        n.parent = self
        return n

    def get_model_object(self, name: str):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None) -> None:
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name, number,
                                                             transformer_index)

    def set_model_attn2_replace(self, patch, block_name, number, transformer_index=None) -> None:
        self.set_model_patch_replace(patch, "attn2", block_name, number, transformer_index)
