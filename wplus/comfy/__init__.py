"""ComfyUI host: the W+ node pack on the same core (no ComfyUI import at module import time).

`nodes` holds the node classes (thin: inputs -> core calls), `patch` the attention patch that a
`WPlusApply` puts on its ModelPatcher clone, `layers` where ComfyUI calls each adapter layer,
`schedule` when the branch runs (the core's one start rule, ComfyUI's sigmas), `files` the model
folders registered with ComfyUI's `folder_paths`, `images` ComfyUI's IMAGE tensors.
"""
