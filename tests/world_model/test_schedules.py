"""The one learning-rate schedule (world_model/schedules.py) gives what each trainer's own schedule gave before it."""
from __future__ import annotations

import pytest
import torch

from world_model.schedules import ema_momentum, learning_rate, set_learning_rate

# step -> the learning rate the trainers' own schedules gave, at their default settings
PRETRAIN = {0: 5e-05, 1: 5.3e-05, 75: 0.000275, 149: 0.000497, 150: 5e-4, 151: 0.0004999993244265606,
            800: 0.0002650071348131637, 1499: 1.000675573439464e-06, 1500: 1e-06, 2000: 1e-06}
PREDICTOR = {0: 3e-06, 1: 6e-06, 50: 0.000153, 99: 3e-4, 100: 3e-4, 101: 0.00029999980178776835,
             1000: 0.00016697400509348818, 1999: 1.00001982122316e-05, 2000: 1e-05, 2500: 1e-05}
PIXEL = {(0, 0.0): 1e-05, (1, 0.3): 2e-05, (99, 0.05): 1e-3, (100, 0.05): 0.0009939057285945933,
         (500, 0.25): 0.000855017856687341, (1000, 0.7): 0.00021404630011522585,
         (1999, 0.9995): 1.0000610681646757e-05, (2000, 1.2): 1e-05}


def test_it_warms_up_linearly_then_decays_by_a_cosine_to_its_floor():
    rate = lambda step: learning_rate(step, 110, 1e-3, 1e-5, 10)  # noqa: E731
    assert rate(0) == pytest.approx(1e-4) and rate(9) == pytest.approx(1e-3)  # step + 1 of 10
    assert rate(10) == pytest.approx(1e-3)  # the peak, where the decay starts
    assert rate(60) == pytest.approx((1e-3 + 1e-5) / 2)  # half way: the cosine's midpoint
    assert rate(110) == pytest.approx(1e-5) and rate(500) == pytest.approx(1e-5)  # the floor, and it stays


@pytest.mark.parametrize("step", PRETRAIN)
def test_pretraining_warms_up_from_start_lr_then_decays(step):  # encoder=vjepa_tiny: 1500 steps
    assert learning_rate(step, 1500, 5e-4, 1e-6, 150, start_lr=5e-5) == pytest.approx(PRETRAIN[step], rel=1e-12)


@pytest.mark.parametrize("step", PREDICTOR)
def test_the_predictor_warms_up_to_the_peak_on_its_last_warmup_step(step):  # predictor/default.yaml
    assert learning_rate(step, 2000, 3e-4, 1e-5, 100) == pytest.approx(PREDICTOR[step], rel=1e-12)


@pytest.mark.parametrize("step, progress", PIXEL)
def test_the_pixel_model_decays_with_its_own_progress(step, progress):  # world_model/pixel.yaml, a time budget
    rate = learning_rate(step, 2000, 1e-3, 1e-5, 100, progress=progress)
    assert rate == pytest.approx(PIXEL[step, progress], rel=1e-12)


@pytest.mark.parametrize("steps", [1, 7, 300])
def test_without_warmup_it_is_torchs_cosine_annealing(steps):  # the policy, the position readout, the probes
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    for step in range(steps):
        assert learning_rate(step, steps, 1e-3) == pytest.approx(optimizer.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        optimizer.step()
        schedule.step()


def test_set_learning_rate_sets_every_group():
    optimizer = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]},
                                 {"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.5}], lr=1.0)
    set_learning_rate(optimizer, 0.25)
    assert [group["lr"] for group in optimizer.param_groups] == [0.25, 0.25]


def test_ema_momentum_ramps_linearly_and_stays():
    assert [ema_momentum(step, 10, 0.99, 1.0) for step in (0, 5, 10, 20)] == pytest.approx([0.99, 0.995, 1.0, 1.0])
