"""The WebUI's compute device (CPU in tests)."""
import torch

device = torch.device("cpu")
cpu = torch.device("cpu")
dtype = torch.float32
