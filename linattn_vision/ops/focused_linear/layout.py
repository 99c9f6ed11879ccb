"""Tile layout shared by the Triton kernels and the op's shape functions (no Triton import here)."""

# Largest per-head state (H_PAD * D_PAD * D_PAD fp32 values) the 3D kernels take: at 16K (16 heads of 32) the
# backward asked for 320 KB of shared memory on an H100 (limit 227 KB); larger layouts take the exact path.
MAX_STATE_ELEMS = 8192


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_dims(num_heads: int, head_dim: int) -> tuple[int, int]:
    """(H_PAD, D_PAD): heads and head dim padded to powers of two (dots need a dim of at least 16)."""
    return next_pow2(num_heads), max(16, next_pow2(head_dim))


def kernels_support(num_heads: int, head_dim: int, fp32: bool = False) -> bool:
    """Whether the Triton kernels take this head layout and precision (otherwise the op uses the exact path).

    Beyond C = 64 the kernels keep a per-head (H_PAD, D_PAD, D_PAD) state and batched 3D dots, whose fp32
    form has not been made to fit shared memory yet: fp32 inputs of that size take the exact path."""
    if num_heads > 32 or head_dim > 128:
        return False
    if uses_flat_layout(num_heads, head_dim):
        return True
    if fp32:
        return False
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    return h_pad * d_pad * d_pad <= MAX_STATE_ELEMS


def uses_flat_layout(num_heads: int, head_dim: int) -> bool:
    """Small C (C_PAD <= 64, or 128 with a power-of-two head dim, whose per-head sums need no block-diagonal
    ones matrix in shared memory): one [tokens, C_PAD] tile per program and a block-diagonal (C_PAD, C_PAD)
    state, so every per-head product is a plain 2D dot (the off-diagonal head blocks are masked to zero)."""
    c_pad = next_pow2(num_heads * head_dim)
    return c_pad <= 64 or (c_pad <= 128 and head_dim == next_pow2(head_dim))


def state_shapes(num_heads: int, head_dim: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Per-batch shapes of the saved fp32 state (kv / N, kmean) in the kernels' layout."""
    if uses_flat_layout(num_heads, head_dim):
        c_pad = max(16, next_pow2(num_heads * head_dim))
        return (c_pad, c_pad), (c_pad,)
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    return (h_pad, d_pad, d_pad), (h_pad, d_pad)
