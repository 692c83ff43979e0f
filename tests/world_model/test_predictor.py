"""Predictor model: shapes, block causality, action use, rollout window, normalisation, save/load."""
from __future__ import annotations

import pytest
import torch

from world_model.compiled_rollout import compile_method
from world_model.energy import latent_distance
from world_model.predictor import Predictor, PredictorConfig, load_predictor, pool_token_grid, save_predictor


def tiny_predictor(**overrides) -> Predictor:
    settings = dict(latent_dim=16, action_dim=2, block=3, pool_grid=2, width=32, depth=2, heads=4, context_frames=3)
    torch.manual_seed(0)
    model = Predictor(PredictorConfig(**{**settings, **overrides}))
    with torch.no_grad():  # leave the copy-last initialisation so that outputs depend on the inputs
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


@pytest.mark.parametrize("conditioning", ["token", "adaln"])
@pytest.mark.parametrize("proprio_dim", [0, 4])
def test_shapes_and_block_causality(conditioning, proprio_dim):
    model = tiny_predictor(conditioning=conditioning, proprio_dim=proprio_dim)
    latents, actions = torch.randn(2, 3, 4, 16), torch.randn(2, 3, 6)  # (B, F, N, D), (B, F, block*A)
    proprio = torch.randn(2, 3, 4) if proprio_dim else None
    next_latents, next_proprio = model(latents, actions, proprio)
    assert next_latents.shape == (2, 3, 4, 16)
    assert (next_proprio is None) == (proprio_dim == 0)

    later_changed = latents.clone()
    later_changed[:, 2] += 1.0
    later_actions = actions.clone()
    later_actions[:, 2] += 1.0
    changed, _ = model(later_changed, later_actions, proprio)
    assert torch.equal(changed[:, :2], next_latents[:, :2])  # frames 0, 1 never see frame 2
    assert not torch.allclose(changed[:, 2], next_latents[:, 2])


def test_proprio_enters_the_latent_tokens_as_fourier_features():
    model = tiny_predictor(proprio_dim=4, proprio_frequencies=3)
    assert model.tokens_per_frame == 4 + 1  # no extra token: the proprio is added to the latent tokens
    proprio = torch.tensor([[0.5, -1.0, 0.0, 2.0]])
    features = model.proprio_features(proprio)  # (1, 4 * (1 + 2 * 3))
    assert features.shape == (1, 28)
    torch.testing.assert_close(features[0, :4], proprio[0])
    torch.testing.assert_close(features[0, 4:16], (proprio[0, :, None] * torch.tensor([1.0, 2.0, 4.0])).flatten().sin())
    latents, actions = torch.randn(2, 3, 4, 16), torch.randn(2, 3, 6)
    first, _ = model(latents, actions, torch.zeros(2, 3, 4))
    second, _ = model(latents, actions, torch.ones(2, 3, 4))
    assert latent_distance(first, second).min() > 1e-6
    with pytest.raises(ValueError, match="proprio_frequencies=-1"):
        PredictorConfig(latent_dim=16, action_dim=2, proprio_dim=4, proprio_frequencies=-1)


@pytest.mark.parametrize("conditioning", ["token", "adaln"])
def test_prediction_depends_on_the_action(conditioning):
    model = tiny_predictor(conditioning=conditioning)
    context = torch.randn(5, 2, 4, 16)
    first = model.rollout(context, torch.zeros(5, 1, 6))
    second = model.rollout(context, torch.ones(5, 1, 6))
    assert latent_distance(first, second).min() > 1e-6


def test_rollout_shape_and_sliding_window():
    model = tiny_predictor(context_frames=2)
    context, actions = torch.randn(3, 4, 4, 16), torch.randn(3, 5, 6)  # C = 4 > context_frames
    context_actions = torch.randn(3, 3, 6)
    predicted = model.rollout(context, actions, context_actions=context_actions)
    assert predicted.shape == (3, 5, 4, 16)
    only_last = model.rollout(context[:, -2:], actions, context_actions=context_actions[:, -1:])
    torch.testing.assert_close(predicted, only_last)  # only the last context_frames frames are used
    first_step = model(context[:, -2:], torch.cat([context_actions[:, -1:], actions[:, :1]], dim=1))[0][:, -1]
    torch.testing.assert_close(predicted[:, 0], first_step)


@pytest.mark.parametrize("conditioning", ["token", "adaln"])
@pytest.mark.parametrize("proprio_dim", [0, 3])
def test_cached_rollout_equals_recomputing_every_frame(conditioning, proprio_dim):
    model = tiny_predictor(context_frames=2, conditioning=conditioning, proprio_dim=proprio_dim)
    context, context_actions = torch.randn(3, 2, 4, 16), torch.randn(3, 1, 6)
    actions = torch.randn(3, 4, 6)
    context_proprio = torch.randn(3, 2, 3) if proprio_dim else None
    predicted = model.rollout(context, actions, context_actions, context_proprio, return_proprio=True)
    # without a cache: run the whole sequence so far through the banded attention at every step
    latents, all_actions, proprio = context, torch.cat([context_actions, actions[:, :1]], dim=1), context_proprio
    for step in range(actions.shape[1]):
        next_latents, next_proprio = model(latents, all_actions, proprio)
        # fp32 sums in other orders
        torch.testing.assert_close(predicted[0][:, step], next_latents[:, -1], atol=1e-4, rtol=1e-4)
        if proprio_dim:
            torch.testing.assert_close(predicted[1][:, step], next_proprio[:, -1], atol=1e-4, rtol=1e-4)
            proprio = torch.cat([proprio, next_proprio[:, -1:]], dim=1)
        latents = torch.cat([latents, next_latents[:, -1:]], dim=1)
        all_actions = torch.cat([all_actions, actions[:, step + 1 : step + 2]], dim=1)


def test_candidates_can_share_one_context_row():
    model = tiny_predictor(context_frames=3)
    context, context_actions = torch.randn(2, 3, 4, 16), torch.randn(2, 2, 6)
    actions = torch.randn(2 * 5, 3, 6)  # 5 candidates per context row
    shared = model.rollout(context, actions, context_actions)
    repeated = model.rollout(context.repeat_interleave(5, dim=0), actions, context_actions.repeat_interleave(5, dim=0))
    torch.testing.assert_close(shared, repeated)
    with pytest.raises(ValueError, match="not a multiple of 2 contexts"):
        model.rollout(context, actions[:7], context_actions)


def test_untrained_predictor_is_the_copy_last_baseline():
    model = Predictor(PredictorConfig(latent_dim=16, action_dim=2, width=32, depth=1, heads=2))
    context = torch.randn(4, 2, 1, 16)
    predicted = model.rollout(context, torch.randn(4, 3, 10))
    torch.testing.assert_close(predicted, context[:, -1:].expand(-1, 3, -1, -1))


def test_prepare_latents_pools_and_normalises():
    model = tiny_predictor(pool_grid=2)
    tokens = torch.randn(3, 16, 16)  # (B, 4x4 grid, D)
    prepared = model.prepare_latents(tokens)
    assert prepared.shape == (3, 4, 16)
    grid = tokens.view(3, 4, 4, 16)
    top_left = grid[:, :2, :2].mean(dim=(1, 2))
    expected = torch.nn.functional.layer_norm(top_left, (16,))
    torch.testing.assert_close(prepared[:, 0], expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.prepare_latents(grid), prepared)  # (B, h, w, D) accepted too
    assert pool_token_grid(grid.unsqueeze(1), 1).shape == (3, 1, 1, 1, 16)
    with pytest.raises(ValueError, match="larger than the token grid"):
        pool_token_grid(grid, 8)


def test_projection_fitted_on_data_and_saved(tmp_path):
    model = tiny_predictor(projection_dim=4, pool_grid=1)
    tokens = torch.randn(500, 16) @ torch.randn(16, 16)
    model.fit_normalisation(tokens)
    projection = model.projection  # (16, 4): orthonormal columns spanning the top 4 principal directions
    torch.testing.assert_close(projection.T @ projection, torch.eye(4), rtol=0, atol=1e-5)
    centred = tokens - tokens.mean(0)
    top_variance = torch.linalg.eigvalsh(centred.T @ centred / 499)[-4:].sum()
    torch.testing.assert_close((centred @ projection).var(0).sum(), top_variance, rtol=1e-4, atol=0)
    prepared = model.prepare_latents(tokens.view(500, 1, 1, 16))
    assert prepared.shape == (500, 1, 4)
    save_predictor(model, tmp_path, {"task": "reacher"})
    loaded, meta = load_predictor(tmp_path)
    assert meta["task"] == "reacher" and loaded.config == model.config
    torch.testing.assert_close(loaded.prepare_latents(tokens.view(500, 1, 1, 16)), prepared)
    context, actions = torch.randn(2, 2, 1, 4), torch.randn(2, 3, 6)
    torch.testing.assert_close(loaded.rollout(context, actions), model.rollout(context, actions))


def test_latent_distance_norms():
    predicted, goal = torch.zeros(2, 3, 4), torch.ones(2, 3, 4)
    assert torch.equal(latent_distance(predicted, 2 * goal, "l2"), torch.full((2,), 4.0))
    assert torch.equal(latent_distance(predicted, 2 * goal, "l1"), torch.full((2,), 2.0))
    with pytest.raises(ValueError, match="norm='cos'"):
        latent_distance(predicted, goal, "cos")


def test_speed_benchmark_smoke(tmp_path):
    from benchmarks.predictor_speed import main as benchmark

    rows = benchmark(["--smoke", "--threads", "1", "--output", str(tmp_path / "speed.json")])
    assert {(row["layout"], row["dtype"]) for row in rows} == {
        (layout, dtype) for layout in ("default", "k=1", "k=2") for dtype in ("fp32", "bf16")}
    assert all(row["rollouts_per_s"] > 0 for row in rows) and (tmp_path / "speed.json").exists()


def test_flattened_grid_gives_one_token_per_frame_that_keeps_the_layout():
    config = PredictorConfig(latent_dim=8, action_dim=2, pool_grid=2, flatten_grid=True, projection_dim=6,
                             width=16, depth=1, heads=2, context_frames=2)
    model = Predictor(config)
    tokens = torch.randn(50, 4, 4, 8)  # (B, h, w, D)
    model.fit_normalisation(model.pool(tokens).reshape(-1, config.token_dim))
    latents = model.prepare_latents(tokens)
    assert config.tokens == 1 and latents.shape == (50, 1, 6)
    mirrored = model.prepare_latents(tokens.flip(1))  # same mean token, different layout
    assert not torch.allclose(latents, mirrored, atol=1e-3)
    assert model.rollout(latents[:4, None].expand(4, 2, 1, 6), torch.zeros(4, 3, 10)).shape == (4, 3, 1, 6)


def rollout_case(kind: str):
    """Two copies of a model (the same weights) and a rollout's arguments: context frames, actions, context actions."""
    if kind == "latent":
        model, eager = (tiny_predictor(context_frames=2, depth=1, conditioning="adaln") for _ in range(2))
        return model, eager, (torch.randn(1, 2, 4, 16), torch.randn(6, 2, 6), torch.randn(1, 1, 6))
    from tests.world_model.test_pixel_model import trained_looking

    model, eager = (trained_looking() for _ in range(2))  # the same weights (seed 0), not the copy-last init
    return model, eager, (torch.rand(1, 2, 3, 16, 16), torch.randn(6, 2, 4), torch.randn(1, 1, 4))


@pytest.mark.parametrize("kind", ["latent", "pixel"])
def test_a_rollout_is_one_graph_per_shape(kind, monkeypatch):
    """A whole rollout is one graph; each shape (batch, cached frames) is one more, and each is compiled even where
    torch.compile's recompile limit is lower than the shapes (it would run the rest eagerly, silently). Graphs are
    Dynamo's, whatever the backend: here its eager backend, which compiles in a second where Inductor takes 30 s."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda function, **settings: torch_compile(
        function, **{**settings, "backend": "eager"}))
    model, eager, (context, actions, context_actions) = rollout_case(kind)
    compile_method(model, "rollout", fallback=False)
    graphs = counters["stats"]["unique_graphs"]
    calls = [(context, actions, context_actions), (context[:, -1:], actions, None)]  # one context frame: no caches
    with torch.no_grad(), torch._dynamo.config.patch(recompile_limit=1):
        for arguments in calls:
            torch.testing.assert_close(model.rollout(*arguments), eager.rollout(*arguments))
        # one graph per shape (2 > the limit of 1); a graph per step would make 3 or more
        assert counters["stats"]["unique_graphs"] - graphs == len(calls)
        assert torch._dynamo.config.recompile_limit == 1  # raised only during the compiled calls


def test_a_failing_compile_falls_back_to_eager_with_a_warning(monkeypatch):
    def broken_compile(function, **settings):
        def compiled(*args, **kwargs):
            raise RuntimeError("no C++ compiler")
        return compiled

    model = tiny_predictor(context_frames=2)
    eager = tiny_predictor(context_frames=2)
    context, context_actions, actions = torch.randn(1, 2, 4, 16), torch.randn(1, 1, 6), torch.randn(6, 3, 6)
    monkeypatch.setattr(torch, "compile", broken_compile)
    compile_method(model, "rollout")
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="no C.. compiler"):
        compiled = model.rollout(context, actions, context_actions)
    torch.testing.assert_close(compiled, eager.rollout(context, actions, context_actions))
    strict = tiny_predictor(context_frames=2)
    compile_method(strict, "rollout", fallback=False)
    with torch.no_grad(), pytest.raises(RuntimeError, match="no C.. compiler"):
        strict.rollout(context, actions, context_actions)