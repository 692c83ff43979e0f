"""`jepa-agent probe`: judge a frozen encoder the V-JEPA way, by probing it for the task state.

For the encoder `cfg.encoder.source` and a randomly initialised encoder of the same architecture,
probes are fitted from frozen tokens of train episodes to the simulator state and scored with R^2
on held-out episodes, per target group:
    angles      reacher joint angles, as (sin, cos)        (tasks whose `angular_positions` is true)
    positions   point-mass x, y                            (the others)
    velocities  qvel
Probes: `linear` (ridge on mean-pooled tokens) and `attentive` (learned-query pooler + linear head).
Writes `cfg.run_dir/probe/probe.json`, `probe.png` (bar chart, encoder vs random) and `config.yaml`.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from envs.io import atomic_save, atomic_write_json, atomic_write_text, ensure_writable_dir
from envs.registry import task_class
from world_model.encoder import FrozenEncoder, load_encoder, random_encoder
from world_model.vjepa.probe_heads import fit_attentive_probe, fit_ridge, r2_scores


def state_targets(qpos: np.ndarray, qvel: np.ndarray, angles: bool) -> dict[str, np.ndarray]:
    """Probe targets per group from qpos (T, nq) and qvel (T, nv): {group: (T, k)}; hinge joints
    (`angles`) as (sin, cos), since a frame shows an angle only modulo 2 pi."""
    if angles:
        return {"angles": np.concatenate([np.sin(qpos), np.cos(qpos)], axis=1), "velocities": qvel}
    return {"positions": qpos, "velocities": qvel}


def probe_samples(store, stride: int, max_frames: int, clip_frames: int, angles: bool):
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


def evaluate_encoder(encoder: FrozenEncoder, train, test, settings: DictConfig, seed: int) -> dict:
    """R^2 per probe kind and target group, e.g. {"linear": {"angles": 0.9, ...}, "attentive": {...}}."""
    (train_clips, train_targets, train_episodes), (test_clips, test_targets, _) = train, test
    train_tokens, test_tokens = embed(encoder, train_clips), embed(encoder, test_clips)  # (M, N, D)
    results: dict[str, dict[str, float]] = {"linear": {}, "attentive": {}}
    attentive = settings.attentive
    for group in train_targets:
        ridge = fit_ridge(train_tokens.float().mean(dim=1), train_targets[group], train_episodes,
                          list(settings.ridge_alphas))
        predicted = ridge.predict(test_tokens.float().mean(dim=1))
        results["linear"][group] = r2_scores(predicted, test_targets[group].double()).mean().item()
        probe = fit_attentive_probe(train_tokens, train_targets[group], attentive.steps, attentive.batch_size,
                                    attentive.lr, attentive.weight_decay, attentive.width,
                                    attentive.num_queries, attentive.num_heads, seed)
        predicted = probe.predict(test_tokens)
        results["attentive"][group] = r2_scores(predicted, test_targets[group].double()).mean().item()
    return results


def plot(results: dict, path: Path) -> None:
    """Grouped bars of R^2: (probe, group) on the x axis, encoder vs random encoder side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [(probe, group) for probe in results["encoder"] for group in results["encoder"][probe]]
    x = np.arange(len(labels))
    figure, axes = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.6))
    for offset, name in ((-0.2, "encoder"), (0.2, "random")):
        values = [max(results[name][probe][group], -0.1) for probe, group in labels]
        axes.bar(x + offset, values, width=0.4, label="in-domain encoder" if name == "encoder" else "random init")
    axes.set_xticks(x, [f"{probe}\n{group}" for probe, group in labels])
    axes.set_ylabel("held-out R$^2$ (clipped at -0.1)")
    axes.set_ylim(-0.1, 1.0)
    axes.axhline(0.0, color="black", linewidth=0.8)
    axes.legend(loc="upper right")
    figure.tight_layout()
    atomic_save(path, lambda temp: figure.savefig(temp, format="png", dpi=120))
    plt.close(figure)


def main(cfg: DictConfig) -> None:
    """Probe `cfg.encoder.source` and a random encoder of its architecture; write probe.json/png."""
    from envs.dataset import EpisodeStore

    settings = cfg.probe
    output = ensure_writable_dir(Path(cfg.run_dir) / "probe", "probe directory")
    started = time.perf_counter()
    encode = cfg.encoder.encode
    encoder = load_encoder(cfg.encoder.source, cfg.device, encode.autocast_bf16, encode.chunk_size)
    baseline = random_encoder(encoder.config, settings.random_seed, cfg.device, encode.autocast_bf16,
                              encode.chunk_size)
    stores = {split: EpisodeStore(Path(cfg.paths.dataset) / split)
              for split in (settings.train_split, settings.test_split)}
    task = stores[settings.train_split].meta.get("task")
    angles = task_class(task).angular_positions
    train, test = (probe_samples(stores[split], settings.frame_stride, settings.max_frames,
                                 settings.clip_frames, angles)
                   for split in (settings.train_split, settings.test_split))
    atomic_write_text(output / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    results = {"encoder": evaluate_encoder(encoder, train, test, settings, cfg.seed),
               "random": evaluate_encoder(baseline, train, test, settings, cfg.seed)}
    report = {"task": task, "encoder": {"source": str(cfg.encoder.source), "fingerprint": encoder.fingerprint,
                                        "grid": list(encoder.grid), "dim": encoder.dim},
              "train_frames": len(train[0]), "test_frames": len(test[0]),
              "splits": {"train": settings.train_split, "test": settings.test_split},
              "clip_frames": settings.clip_frames, "r2": results,
              "seconds": round(time.perf_counter() - started, 1)}
    atomic_write_json(output / "probe.json", report)
    plot(results, output / "probe.png")
    print(f"probe: {task}, {len(train[0])} train / {len(test[0])} test frames, held-out R^2:")
    for probe_kind in results["encoder"]:
        for group, value in results["encoder"][probe_kind].items():
            print(f"  {probe_kind:<9} {group:<10} encoder {value:6.3f}   random {results['random'][probe_kind][group]:6.3f}")
    print(f"probe: wrote {output / 'probe.json'} and probe.png ({report['seconds']} s)")
