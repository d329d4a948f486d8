"""The paper's residual identity branch: projection, residual attention, layer discovery, hooks, CFG rows,
adapter files."""
