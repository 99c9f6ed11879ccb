"""Forward and backward of every backbone family run without a device-to-host sync: no .item(), bool(tensor),
.tolist() or data-dependent shapes, which on a GPU stall the launch queue (issue 9's "no host syncs").

Observed at the dispatcher: those calls lower to aten._local_scalar_dense (or nonzero-like ops with data-dependent
output shapes), so a TorchDispatchMode that refuses them catches any such call, on CPU as on CUDA."""
import pytest
import timm
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import linattn_vision  # noqa: F401

SYNCING_OPS = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
               torch.ops.aten.masked_select.default, torch.ops.aten.unique_dim.default,
               torch.ops.aten._unique2.default}


class RefuseHostSync(TorchDispatchMode):
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in SYNCING_OPS:
            raise AssertionError(f'host sync: {func}')
        return func(*args, **(kwargs or {}))


def test_the_guard_catches_item():
    x = torch.ones(2)
    with pytest.raises(AssertionError, match='host sync'), RefuseHostSync():
        (x * 2).sum().item()


@pytest.mark.parametrize('name, size', [
    ('flatten_swin_t', 64), ('agent_swin_t', 64), ('flatten_pvt_t', 64), ('agent_pvt_t', 64),
    ('flatten_pvt_v2_b0', 64), ('flatten_cswin_t', 64), ('agent_cswin_t', 64), ('flatten_deit_t', 64),
    ('agent_deit_t', 64),
])
def test_forward_and_backward_without_host_sync(name, size):
    model = timm.create_model(name, img_size=size).train()
    x = torch.randn(2, 3, size, size)
    model(x)  # first call: per-size tables are built and cached (a one-off, outside the guard)
    with RefuseHostSync():
        out = model(x)
        out.float().square().mean().backward()
    assert out.shape == (2, 1000)
