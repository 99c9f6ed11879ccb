"""Tile layout shared by the Triton kernels and the op's shape functions (no Triton import here).

Every kernel program holds a [H_PAD, BLOCK_N, D_PAD] tile (all heads of BLOCK_N tokens: the focusing function
normalises over the full C channels of a token) and a per-head (H_PAD, D_PAD, D_PAD) state, so each per-head
product is one batched 3D dot and no tensor-core work is spent on other heads' blocks.
"""

# Largest per-head state (H_PAD * D_PAD * D_PAD fp32 values) the kernels take with half inputs: at 16K (16 heads
# of 32) the backward asked for 320 KB of shared memory on an H100 (limit 227 KB); fp32 inputs (fp32 dot operands,
# twice the shared memory) take half of that. Larger layouts take the exact path.
MAX_STATE_ELEMS = 8192
MAX_STATE_ELEMS_FP32 = 4096


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_dims(num_heads: int, head_dim: int) -> tuple[int, int]:
    """(H_PAD, D_PAD): heads and head dim padded to powers of two (dots need a dim of at least 16)."""
    return next_pow2(num_heads), max(16, next_pow2(head_dim))


def kernels_support(num_heads: int, head_dim: int, fp32: bool = False) -> bool:
    """Whether the Triton kernels take this head layout and precision (otherwise the op uses the exact path).
    Not lru_cached: it is cheap, and torch.compile warns about every lru_cache it traces through."""
    if num_heads > 32 or head_dim > 128:
        return False
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    return h_pad * d_pad * d_pad <= (MAX_STATE_ELEMS_FP32 if fp32 else MAX_STATE_ELEMS)


def state_size(num_heads: int, head_dim: int) -> int:
    """fp32 values per batch of the saved state: the padded per-head (H_PAD, D_PAD, D_PAD) matrix kv / N, then the
    (H_PAD, D_PAD) vector kmean."""
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    return h_pad * d_pad * (d_pad + 1)
