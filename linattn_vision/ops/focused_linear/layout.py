"""Tile layout shared by the Triton kernels and the op's shape functions (no Triton import here)."""

# Largest all-heads state (H_PAD * D_PAD * D_PAD fp32 values) one kernel program keeps in registers.
MAX_STATE_ELEMS = 32768


def next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def tile_dims(num_heads: int, head_dim: int) -> tuple[int, int]:
    """(H_PAD, D_PAD): heads and head dim padded to powers of two (dots need a dim of at least 16)."""
    return next_pow2(num_heads), max(16, next_pow2(head_dim))


def kernels_support(num_heads: int, head_dim: int) -> bool:
    """Whether the Triton kernels take this head layout (otherwise the op uses the exact path)."""
    if num_heads > 32 or head_dim > 128:
        return False
    h_pad, d_pad = tile_dims(num_heads, head_dim)
    return h_pad * d_pad * d_pad <= MAX_STATE_ELEMS
