"""The shared training loops: fixed-step fitting under the learning-rate schedule, and held-out losses that count
every validation window once, whatever the batch size."""
from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from world_model.fitting import fit_steps, held_out_losses
from world_model.schedules import learning_rate


class Windows:
    """Window w's "frames" are the values w and w + 0.5: batch() hands the model those rows."""

    def batch(self, windows: torch.Tensor, device):
        return (windows.float()[:, None] + torch.tensor([0.0, 0.5])).to(device),  # (B, 2)


def squared_losses(model, frames, rollout_steps, loss):
    assert not model.training  # validation runs the model in eval mode
    assert loss == "l2" and rollout_steps == 3  # the trainer's settings reach its loss function
    return {"loss": model(frames).pow(2).mean(), "copy_last": frames.mean()}


@pytest.mark.parametrize("batch_size", [1, 3, 4, 10])
def test_held_out_losses_average_every_window_once(batch_size):
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.ones_(model.weight)  # model(frames) = 2w + 0.5
    windows = torch.arange(7)
    train_cfg = OmegaConf.create({"batch_size": batch_size, "bf16": False, "rollout_steps": 3, "loss": "l2"})
    losses = held_out_losses(squared_losses, model, Windows(), windows, train_cfg, torch.device("cpu"))
    expected_loss = sum((2 * w + 0.5) ** 2 for w in range(7)) / 7
    assert losses["loss"] == pytest.approx(expected_loss)
    assert losses["copy_last"] == pytest.approx(sum(w + 0.25 for w in range(7)) / 7)
    assert model.training and model.weight.grad is None  # back in training mode, no gradients kept


def test_fit_steps_follows_the_schedule_and_fits():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    inputs = torch.randn(64, 3)
    targets = inputs @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    losses, rates = [], []

    def batch_loss() -> torch.Tensor:
        rates.append(optimizer.param_groups[0]["lr"])  # set by fit_steps before each batch
        losses.append((model(inputs) - targets).square().mean())
        return losses[-1]

    fit_steps(optimizer, 200, 0.1, batch_loss, "fit a line")
    assert rates == [learning_rate(step, 200, 0.1) for step in range(200)]
    assert losses[-1].item() < 1e-3 * losses[0].item()  # each step's gradient reached the weights
