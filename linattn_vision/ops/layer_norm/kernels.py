"""Triton kernels of a LayerNorm over the last dimension whose output has another dtype than its input, forward
and backward.

Each program normalises BLOCK_M rows at a time (a [BLOCK_M, BLOCK_C] tile, statistics in fp32 along each row): the
backbones' channel counts are small (96 in Swin-T's first stage), where one row per thread block leaves most of
a block idle. The backward loops over row blocks so that each program sums its share of d weight and d bias in
its own accumulators; the per-program partials are summed afterwards with torch (fixed order: deterministic).
Set TRITON_INTERPRET=1 before importing this module to run them on CPU tensors (tests do this).
"""
import torch
import triton
import triton.language as tl

from .._triton import sm_count

# elements per tile, over 8 warps: 16 rows of Swin-T's first stage, 2 of a 768-wide one; the backward compiled for
# sm_90 with 4096 needed 255 registers and spilled, with 2048 it takes 107-139
_TILE = 2048


def _tile(C: int) -> tuple[int, int, int]:
    """(BLOCK_M, BLOCK_C, num_warps) for rows of C elements."""
    block_c = triton.next_power_of_2(C)
    return max(1, _TILE // block_c), block_c, 8


@triton.jit
def _tile_offsets(row0, M, C, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Offsets of rows row0.. (int64 row0: huge tensors) relative to row0's start, as 32-bit [BLOCK_M, BLOCK_C]
    (64-bit offsets per element cost two registers each), local rows [BLOCK_M, 1] and the mask."""
    local = tl.arange(0, BLOCK_M)[:, None]
    cols = tl.arange(0, BLOCK_C)[None, :]
    return local * C + cols, local, (row0 + local < M) & (cols < C)


@triton.jit(do_not_specialize=['M'])
def _forward_kernel(x_ptr, w_ptr, b_ptr, y_ptr, mean_ptr, rstd_ptr, M, C, eps,
                    SAVE_STATS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    row0 = tl.program_id(0).to(tl.int64) * BLOCK_M
    offs, local, mask = _tile_offsets(row0, M, C, BLOCK_M, BLOCK_C)
    x = tl.load(x_ptr + row0 * C + offs, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1, keep_dims=True) / C
    centered = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(centered * centered, axis=1, keep_dims=True) / C + eps)
    cols = tl.arange(0, BLOCK_C)[None, :]
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    tl.store(y_ptr + row0 * C + offs, (centered * rstd * w + b).to(y_ptr.dtype.element_ty), mask=mask)
    if SAVE_STATS:
        row_ok = row0 + local < M
        tl.store(mean_ptr + row0 + local, mean, mask=row_ok)
        tl.store(rstd_ptr + row0 + local, rstd, mask=row_ok)


@triton.jit(do_not_specialize=['M', 'blocks_per_program'])
def _backward_kernel(x_ptr, dy_ptr, w_ptr, mean_ptr, rstd_ptr, dx_ptr, part_ptr, M, C, blocks_per_program,
                     BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """dx for the program's row blocks, and its partial sums of dy * x_hat (d weight) and dy (d bias)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_C)[None, :]
    w = tl.load(w_ptr + cols, mask=cols < C, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK_C,), dtype=tl.float32)
    db = tl.zeros((BLOCK_C,), dtype=tl.float32)
    first_block = pid.to(tl.int64) * blocks_per_program
    for i in range(0, blocks_per_program):
        row0 = (first_block + i) * BLOCK_M
        offs, local, mask = _tile_offsets(row0, M, C, BLOCK_M, BLOCK_C)
        x = tl.load(x_ptr + row0 * C + offs, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row0 * C + offs, mask=mask, other=0.0).to(tl.float32)
        row_ok = row0 + local < M
        mean = tl.load(mean_ptr + row0 + local, mask=row_ok, other=0.0)
        rstd = tl.load(rstd_ptr + row0 + local, mask=row_ok, other=0.0)
        x_hat = tl.where(mask, (x - mean) * rstd, 0.0)
        g = dy * w
        # d x = rstd * (g - mean_c(g) - x_hat * mean_c(g * x_hat))
        dx = rstd * (g - tl.sum(g, axis=1, keep_dims=True) / C
                     - x_hat * (tl.sum(g * x_hat, axis=1, keep_dims=True) / C))
        tl.store(dx_ptr + row0 * C + offs, dx.to(dx_ptr.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * x_hat, axis=0)
        db += tl.sum(dy, axis=0)
    c = tl.arange(0, BLOCK_C)
    tl.store(part_ptr + pid * 2 * C + c, dw, mask=c < C)
    tl.store(part_ptr + pid * 2 * C + C + c, db, mask=c < C)


def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, out_dtype: torch.dtype,
            save_stats: bool = False):
    """x contiguous (..., C); weight and bias (C,) -> (LayerNorm(x) in out_dtype, contiguous; and with save_stats
    the fp32 per-row mean and 1/std, else None, None)."""
    C = x.shape[-1]
    M = x.numel() // C
    block_m, block_c, num_warps = _tile(C)
    y = torch.empty(x.shape, dtype=out_dtype, device=x.device)
    mean = torch.empty(M, dtype=torch.float32, device=x.device) if save_stats else None
    rstd = torch.empty(M, dtype=torch.float32, device=x.device) if save_stats else None
    _forward_kernel[(triton.cdiv(M, block_m),)](
        x, weight, bias, y, y if mean is None else mean, y if rstd is None else rstd, M, C, eps,
        SAVE_STATS=save_stats, BLOCK_M=block_m, BLOCK_C=block_c, num_warps=num_warps)
    return y, mean, rstd


def backward(dy: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor):
    """-> dx (x's dtype), d weight and d bias (fp32, (C,)); dy contiguous, in any float dtype."""
    C = x.shape[-1]
    M = x.numel() // C
    block_m, block_c, num_warps = _tile(C)
    n_blocks = triton.cdiv(M, block_m)
    # a few programs per SM, each over whole row blocks (few partial rows to sum)
    blocks_per_program = triton.cdiv(n_blocks, min(n_blocks, 4 * sm_count(x.device)))
    programs = triton.cdiv(n_blocks, blocks_per_program)
    dx = torch.empty_like(x)
    part = torch.empty(programs, 2, C, dtype=torch.float32, device=x.device)
    _backward_kernel[(programs,)](x, dy, weight, mean, rstd, dx, part, M, C, blocks_per_program,
                                  BLOCK_M=block_m, BLOCK_C=block_c, num_warps=num_warps)
    dw_db = part.sum(0)
    return dx, dw_db[0], dw_db[1]
