"""neurofm.training.tokenizer: the annealing callback and the runner's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofm.errors import DataError, NeurofmError
from neurofm.tokenizers.meggpt import MEGGPTTokenizerNet


def test_annealing_callback_sets_the_network_temperature():
    from neurofm.training.tokenizer import TemperatureAnnealing, TokenizerModule

    net = MEGGPTTokenizerNet(n_tokens=4, rnn_units=4, token_dim=3)
    module = TokenizerModule(net)
    cb = TemperatureAnnealing(n_stages=3, n_epochs=6, start=1.0, end=0.0)

    class Trainer:
        current_epoch = 0

    seen = []
    for epoch in range(8):
        Trainer.current_epoch = epoch
        cb.on_train_epoch_start(Trainer, module)
        seen.append(float(net.temperature))
    np.testing.assert_allclose(seen, [1, 1, 0.5, 0.5, 0, 0, 0, 0])


def test_runner_checks_its_arguments():
    from neurofm.training.tokenizer import TemperatureAnnealing, train_tokenizer_net

    net = MEGGPTTokenizerNet(n_tokens=4, rnn_units=4, token_dim=3)
    with pytest.raises(DataError, match="non-empty tensor of windows"):
        train_tokenizer_net(net, torch.empty(0, 10))
    with pytest.raises(NeurofmError, match="batch_size must be a positive integer"):
        train_tokenizer_net(net, torch.zeros(4, 10), batch_size=0)
    with pytest.raises(NeurofmError, match="n_stages must be a positive integer"):
        TemperatureAnnealing(n_stages=0, n_epochs=3)


def test_soft_mix_gives_the_encoder_a_gradient_and_hard_tokens_do_not():
    torch.manual_seed(0)
    net = MEGGPTTokenizerNet(n_tokens=6, rnn_units=5, token_dim=3).train()
    x = torch.randn(4, 20)
    for tau, expect_grad in ((0.5, True), (0.0, False)):
        net.zero_grad()
        net.temperature.fill_(tau)
        loss, logs = net.training_loss(x)
        loss.backward()
        grad = net.proj.weight.grad
        assert (grad is not None and float(grad.abs().sum()) > 0) == expect_grad
        assert logs["temperature"] == pytest.approx(tau)
        assert float(net.kernels.weight.grad.abs().sum()) > 0  # the decoder always learns
