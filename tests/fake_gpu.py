"""Tracing the ops' Triton kernels for a GPU that is not there (mutation analysis builds their TTIR for sm_90)."""
import torch


class Sm90Driver:
    """Stands in for Triton's CUDA driver where there is no GPU: all that tracing asks of it is the target."""

    def get_current_target(self):
        from triton.backends.compiler import GPUTarget
        return GPUTarget('cuda', 90, 32)

    def get_active_torch_device(self):
        return torch.device('cuda')
