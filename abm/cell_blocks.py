"""The block layout of the ``blocks`` cell schedule (``time.cell_schedule = "blocks"``; :mod:`abm.kernels.blocks`).

A cell's action reaches at most R sites from where it starts (its moves, then one neighbour: a division, a kill or
a scan), so blocks at least 2 R wide, coloured by the parity of their block coordinates, never let two cells of one
colour touch the same site. Along a periodic axis the number of blocks is made even, so that the first and last
block (neighbours across the wrap) differ in colour; an axis shorter than 4 R is one block.
"""

from __future__ import annotations

import math

import numpy as np

from abm.kernels.records import BlockLayout


def reach_sites(rules) -> int:
    """R: the farthest site (Chebyshev distance) one cell's action in one step can read or write."""
    moves = max(rules.ctl.moves_per_step, rules.nk.moves_per_step, rules.lak.moves_per_step)
    return int(math.ceil(moves)) + 1


def axis_blocks(n: int, width: int, periodic: bool) -> np.ndarray:
    """Block coordinate of each of the ``n`` sites along one axis: blocks of at least ``width`` sites, an even
    number of them on a periodic axis (one block when the axis has room for fewer than two)."""
    nb = max(1, n // width)
    if periodic and nb > 1 and nb % 2:
        nb -= 1
    edges = (np.arange(nb + 1) * n) // nb
    out = np.zeros(n, np.int64)
    for b in range(nb):
        out[edges[b] : edges[b + 1]] = b
    return out


def block_layout(shape_xyz: tuple[int, int, int], periodic: bool, reach: int) -> BlockLayout:
    """The layout for a lattice of ``shape_xyz`` and a cell reach of ``reach`` sites (blocks ``2 reach`` wide)."""
    width = 2 * reach
    ax = [axis_blocks(n, width, periodic) for n in shape_xyz]
    nbx, nby, nbz = (int(a[-1]) + 1 for a in ax)
    bx, by, bz = np.meshgrid(np.arange(nbx), np.arange(nby), np.arange(nbz), indexing="ij")
    bx, by, bz = (a.transpose(2, 1, 0).ravel() for a in (bx, by, bz))  # block = bx + nbx (by + nby bz)
    colour = (bx % 2) + 2 * (by % 2) + 4 * (bz % 2)
    listed = np.argsort(colour, kind="stable")  # colour-major, block order within a colour
    rank = np.empty(listed.shape[0], np.int64)
    rank[listed] = np.arange(listed.shape[0])
    colour_start = np.searchsorted(colour[listed], np.arange(9)).astype(np.int64)
    return BlockLayout(ax[0], ax[1], ax[2], np.int64(nbx), np.int64(nby), rank, colour_start)


def n_blocks(layout: BlockLayout) -> int:
    return int(layout.rank.shape[0])
