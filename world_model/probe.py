"""`jepa-agent probe`: judge a frozen encoder the V-JEPA way, by probing it for the task state.

For the encoder `cfg.encoder.source` and randomly initialised encoders of the same architecture (one
per seed in `probe.random_seeds`), probes are fitted from frozen tokens of train episodes to the
simulator state and scored with R^2 on held-out episodes, per target group:
    angles      hinge joint angles, as (sin, cos)          (the qpos a task's `angular_positions` flags)
    positions   the other qpos, e.g. point-mass x, y
    velocities  qvel
Probes: `linear` (ridge on the tokens average-pooled to the k x k grid the world model reads,
`probe.linear_pool_grid`, flattened) and `attentive` (learned-query pooler + linear head on all tokens;
its R^2 is the mean over the probe seeds `probe.attentive.seeds`, each seed's kept in the JSON).
The encoder clearly beats random on a probe when it reads the state (R^2 > 0) and its R^2 exceeds
the best random seed's by `probe.clear_margin`. Random seed s is the initialisation that `pretrain`
with `seed=s` starts from, so the seed equal to the run's seed isolates what pretraining changed
(after a few steps, as in the `micro` preset, that encoder and its random twin score alike). Writes
`cfg.run_dir/probe/probe.json`, `probe.png` (bar chart, encoder vs the random seeds' mean and range) and
`config.yaml`.
"""
from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from bookkeeping.checks import angular_position_mask, check_int_list, check_ints, check_number_list, check_numbers
from bookkeeping.io import atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir
from world_model.encoder import FrozenEncoder, load_encoder, random_encoder
from world_model.predictor import pool_token_grid
from world_model.vjepa.probe_heads import fit_attentive_probe, fit_ridge, r2_scores


def state_targets(qpos: np.ndarray, qvel: np.ndarray, angles) -> dict[str, np.ndarray]:
    """Probe targets per group from qpos (T, nq) and qvel (T, nv): {group: (T, k)}; hinge joints
    (`angles`: one flag for all qpos, or one per qpos) as (sin, cos), since a frame shows an angle only
    modulo 2 pi, and the other qpos as they are."""
    mask = np.array(angular_position_mask(angles, qpos.shape[1]))  # (nq,)
    targets = {"positions": qpos[:, ~mask]} if not mask.all() else {}
    if mask.any():
        targets["angles"] = np.concatenate([np.sin(qpos[:, mask]), np.cos(qpos[:, mask])], axis=1)
    return {**targets, "velocities": qvel}


def probe_samples(store, stride: int, max_frames: int, clip_frames: int, angles):
    """Frames (M, clip_frames, H, W, 3) ending at the probed step, targets {group: (M, k)}, episode ids (M,)."""
    frames, targets, episode_ids = [], [], []
    for index in range(len(store)):
        episode = store.episode(index)
        steps = np.arange(clip_frames - 1, len(episode["frames"]), stride)  # (S,)
        clips = np.stack([episode["frames"][step - clip_frames + 1:step + 1] for step in steps])
        frames.append(clips)
        targets.append(state_targets(episode["qpos"][steps], episode["qvel"][steps], angles))
        episode_ids.append(np.full(len(steps), index))
        if sum(len(f) for f in frames) >= max_frames:
            break
    groups = {group: torch.from_numpy(np.concatenate([t[group] for t in targets])[:max_frames])
              for group in targets[0]}
    return (np.concatenate(frames)[:max_frames], groups,
            torch.from_numpy(np.concatenate(episode_ids)[:max_frames]))


def embed(encoder: FrozenEncoder, clips: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """uint8 (M, F, H, W, 3) -> float16 (M, N, D) tokens of the last tubelet, on the CPU."""
    tokens = [encoder.encode(clips[start:start + batch_size])[:, -1].half().cpu()
              for start in range(0, len(clips), batch_size)]
    return torch.cat(tokens)


def pooled_features(tokens: torch.Tensor, grid: int) -> torch.Tensor:
    """(M, N, D) tokens -> (M, grid * grid * D): the linear probe's input, the world model's latent layout."""
    return pool_token_grid(tokens.float(), min(grid, math.isqrt(tokens.shape[1]))).flatten(1)


def evaluate_encoder(encoder: FrozenEncoder, train, test, settings: DictConfig, name: str) -> tuple[dict, dict]:
    """R^2 per probe kind and target group, e.g. {"linear": {"angles": 0.9, ...}, "attentive": {...}},
    the attentive one averaged over the probe seeds `settings.attentive.seeds` (a single attentive
    probe's R^2 moves by a few hundredths with its seed); and the attentive R^2 per probe seed,
    {group: [R^2 per seed]}."""
    (train_clips, train_targets, train_episodes), (test_clips, test_targets, _) = train, test
    train_tokens, test_tokens = embed(encoder, train_clips), embed(encoder, test_clips)  # (M, N, D)
    train_features = pooled_features(train_tokens, settings.linear_pool_grid)  # (M, k * k * D)
    test_features = pooled_features(test_tokens, settings.linear_pool_grid)
    results: dict[str, dict[str, float]] = {"linear": {}, "attentive": {}}
    attentive_by_seed: dict[str, list[float]] = {}
    attentive = settings.attentive
    for group in train_targets:
        ridge = fit_ridge(train_features, train_targets[group], train_episodes, list(settings.ridge_alphas))
        predicted = ridge.predict(test_features)
        results["linear"][group] = r2_scores(predicted, test_targets[group].double()).mean().item()
        attentive_by_seed[group] = []
        for seed in map(int, attentive.seeds):
            probe = fit_attentive_probe(train_tokens, train_targets[group], attentive.steps, attentive.batch_size,
                                        attentive.lr, attentive.weight_decay, attentive.width,
                                        attentive.num_queries, attentive.num_heads, seed,
                                        description=f"attentive probe, {name}, {group}, probe seed {seed}")
            predicted = probe.predict(test_tokens)
            attentive_by_seed[group].append(r2_scores(predicted, test_targets[group].double()).mean().item())
        results["attentive"][group] = float(np.mean(attentive_by_seed[group]))
    return results, attentive_by_seed


def compare_with_random(encoder: dict, random_by_seed: list[dict], clear_margin: float) -> dict:
    """Per probe and group: the random seeds' mean, min and max R^2, the encoder's margin over the best
    random seed, and whether the encoder reads the state (R^2 > 0) with that margin >= `clear_margin`."""
    comparison: dict[str, dict] = {key: {} for key in ("random_mean", "random_min", "random_max",
                                                       "margin_over_best_random", "clearly_beats_random")}
    for probe_kind, groups in encoder.items():
        for key in comparison:
            comparison[key][probe_kind] = {}
        for group, value in groups.items():
            scores = [seed_results[probe_kind][group] for seed_results in random_by_seed]
            margin = value - max(scores)
            comparison["random_mean"][probe_kind][group] = float(np.mean(scores))
            comparison["random_min"][probe_kind][group] = min(scores)
            comparison["random_max"][probe_kind][group] = max(scores)
            comparison["margin_over_best_random"][probe_kind][group] = margin
            # below R^2 = 0 a probe reads nothing (e.g. velocities from one frame), whatever the margin
            comparison["clearly_beats_random"][probe_kind][group] = bool(margin >= clear_margin and value > 0)
    return comparison


def plot(encoder: dict, encoder_attentive_by_seed: dict, comparison: dict, path: Path) -> None:
    """Grouped bars of R^2: (probe, group) on the x axis, the encoder (error bar on the attentive
    probe: min to max over its probe seeds) beside the random seeds' mean (error bar: their min to max)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(probe, group) for probe in encoder for group in encoder[probe]]
    x = np.arange(len(labels))
    clip = lambda values: np.maximum(np.array(values), -0.1)  # noqa: E731
    figure, axes = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.6))
    value = clip([encoder[probe][group] for probe, group in labels])
    per_seed = [encoder_attentive_by_seed[group] if probe == "attentive" else [encoder[probe][group]]
                for probe, group in labels]
    low, high = clip([min(seeds) for seeds in per_seed]), clip([max(seeds) for seeds in per_seed])
    axes.bar(x - 0.2, value, width=0.4, yerr=np.stack([value - low, high - value]), capsize=3,
             label="in-domain encoder (attentive: mean, min-max over probe seeds)")
    mean = clip([comparison["random_mean"][probe][group] for probe, group in labels])
    low = clip([comparison["random_min"][probe][group] for probe, group in labels])
    high = clip([comparison["random_max"][probe][group] for probe, group in labels])
    axes.bar(x + 0.2, mean, width=0.4, yerr=np.stack([mean - low, high - mean]), capsize=3,
             label="random init (mean, min-max over seeds)")
    axes.set_xticks(x, [f"{probe}\n{group}" for probe, group in labels])
    axes.set_ylabel("held-out R$^2$ (clipped at -0.1)")
    axes.set_ylim(-0.1, 1.25)  # the band above 1 holds the legend
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.legend(loc="upper center", ncol=1, fontsize=8)
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def check_settings(settings: DictConfig) -> None:
    """One-line errors naming a bad `probe` value, before anything is read or written."""
    check_ints(settings, "probe", ("frame_stride", "max_frames", "clip_frames", "linear_pool_grid"))
    check_int_list(settings, "probe", "random_seeds")
    check_numbers(settings, "probe", ("clear_margin",))
    check_number_list(settings, "probe", "ridge_alphas")
    attentive = settings.attentive
    check_int_list(attentive, "probe.attentive", "seeds")
    check_ints(attentive, "probe.attentive", ("steps", "batch_size", "width", "num_queries", "num_heads"))
    check_numbers(attentive, "probe.attentive", ("lr",), positive=True)
    check_numbers(attentive, "probe.attentive", ("weight_decay",))


def main(cfg: DictConfig) -> None:
    """Probe `cfg.encoder.source` and random encoders of its architecture; write probe.json/png."""
    from envs.dataset import EpisodeStore, recorded_angular_positions

    settings = cfg.probe
    check_settings(settings)
    stores = {split: EpisodeStore(Path(cfg.paths.dataset) / split)
              for split in (settings.train_split, settings.test_split)}
    train_store = stores[settings.train_split]
    task = train_store.meta.get("task")
    angles = recorded_angular_positions(train_store.meta, f"dataset {str(train_store.split_dir)!r}")
    output = ensure_writable_dir(Path(cfg.run_dir) / "probe", "probe directory")
    (output / "config.yaml").unlink(missing_ok=True)  # written again beside the new results
    started = time.perf_counter()
    encode = cfg.encoder.encode
    encoder = load_encoder(cfg.encoder.source, cfg.device, encode.autocast_bf16, encode.chunk_size)
    train, test = (probe_samples(stores[split], settings.frame_stride, settings.max_frames,
                                 settings.clip_frames, angles)
                   for split in (settings.train_split, settings.test_split))
    encoder_r2, encoder_attentive_by_seed = evaluate_encoder(encoder, train, test, settings, "encoder")
    random_r2, random_attentive_by_seed = {}, {}
    for seed in map(int, settings.random_seeds):
        baseline = random_encoder(encoder.config, seed, cfg.device, encode.autocast_bf16, encode.chunk_size)
        random_r2[seed], random_attentive_by_seed[seed] = evaluate_encoder(baseline, train, test, settings,
                                                                           f"random seed {seed}")
    comparison = compare_with_random(encoder_r2, list(random_r2.values()), float(settings.clear_margin))
    report = {"task": task, "encoder": {"source": str(cfg.encoder.source), "fingerprint": encoder.fingerprint,
                                        "grid": list(encoder.grid), "dim": encoder.dim},
              "train_frames": len(train[0]), "test_frames": len(test[0]),
              "splits": {"train": settings.train_split, "test": settings.test_split},
              "settings": OmegaConf.to_container(settings, resolve=True),  # `probe.*`, as config.yaml has them
              "clip_frames": settings.clip_frames, "linear_pool_grid": settings.linear_pool_grid,
              "clear_margin": settings.clear_margin,
              "r2": {"encoder": encoder_r2, "random": comparison["random_mean"], "random_by_seed": random_r2},
              "attentive_probe_seeds": [int(seed) for seed in settings.attentive.seeds],
              "attentive_r2_by_probe_seed": {"encoder": encoder_attentive_by_seed,
                                             "random_by_seed": random_attentive_by_seed},
              **{key: value for key, value in comparison.items() if key != "random_mean"},
              "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(output / "probe.json", report)
    plot(encoder_r2, encoder_attentive_by_seed, comparison, output / "probe.png")
    atomic_write_text(output / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))  # the settings of these results
    print(f"probe: {task}, {len(train[0])} train / {len(test[0])} test frames, held-out R^2 "
          f"(random: mean [min, max] over seeds {list(random_r2)}; attentive: mean over probe seeds "
          f"{report['attentive_probe_seeds']}):")
    for probe_kind, groups in encoder_r2.items():
        for group, value in groups.items():
            clearly = comparison["clearly_beats_random"][probe_kind][group]
            verdict = "clearly better" if clearly else "not clearly better"
            random_mean = report["r2"]["random"][probe_kind][group]
            random_min = comparison["random_min"][probe_kind][group]
            random_max = comparison["random_max"][probe_kind][group]
            margin = comparison["margin_over_best_random"][probe_kind][group]
            print(f"  {probe_kind:<9} {group:<10} encoder {value:6.3f}   random {random_mean:6.3f} "
                  f"[{random_min:.3f}, {random_max:.3f}]   {verdict} (margin {margin:+.3f})")
    print(f"probe: wrote {output / 'probe.json'} and probe.png ({report['seconds']} s)")
