"""Position tables are built on the device of the positions asked for.

Found on an H200: ``sincos_1d`` built its frequencies on the CPU, so a Brain-JEPA forward on
CUDA failed with "Expected all tensors to be on the same device". CI has no GPU; the ``meta``
device catches the same mixing (a CPU operand with a meta operand raises the same error).
"""

import math

import torch

from neurofm.models.positional import BrainPositions, sincos_1d


def test_sincos_on_another_device_matches_the_cpu_table():
    t = sincos_1d(8, torch.arange(5, device="meta"))
    assert t.device.type == "meta" and t.shape == (5, 8) and t.dtype == torch.float32
    cpu = sincos_1d(8, torch.arange(5))
    # closed form: [sin(p w_i), cos(p w_i)], w_i = 10000 ** (-i / 4)
    w = [10000.0 ** (-i / 4) for i in range(4)]
    expected = [[math.sin(p * wi) for wi in w] + [math.cos(p * wi) for wi in w]
                for p in range(5)]
    torch.testing.assert_close(cpu, torch.tensor(expected, dtype=torch.float32))


def test_sincos_brain_positions_follow_the_device():
    pos = BrainPositions(16, 6, mode="sincos")
    out = pos(4, 6, device=torch.device("meta"))
    assert out.device.type == "meta" and out.shape == (24, 16)
    torch.testing.assert_close(pos(4, 6)[:, :8], sincos_1d(8, torch.arange(4)).repeat(6, 1))
