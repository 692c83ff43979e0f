"""A stage's identity, built one way for every stage: what its outputs depend on.

    config_identity(cfg, ("seed", "predictor.train"), model=..., latents=manifest)
    -> {"latents": {...}, "model": {...}, "predictor": {"train": {...}}, "seed": 0}

The config sections a stage reads (dotted paths), less the keys that never count (`NEVER_COUNT`: where
and how a run goes, how often it saves and logs, what it shows), plus what the stage reads besides its
config (`inputs`: weights' hashes, a cache's manifest). Two identities that differ name the differing keys
(`bookkeeping.io.may_resume`); `identity_hash` is the short form `jepa-agent run` keeps in stages.json.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

NEVER_COUNT = frozenset({
    "run_dir", "paths", "run", "device", "threads", "workers",        # where and how a run goes
    "checkpoint_every", "log_every", "val_every", "val_clips", "val_windows", "resume",  # how often, whether
    "agent", "videos", "batch_envs", "bootstrap_samples",             # an evaluation's: which, what it shows, how fast
})


def config_identity(config: Mapping, sections: Iterable[str] = (), ignoring: Iterable[str] = (), **inputs: Any) -> dict:
    """`config` (a DictConfig or its resolved dict) at each dotted path of `sections` (absent: None), nested
    as in the config, without the keys of NEVER_COUNT at any depth nor the dotted paths of `ignoring`; paths
    inside the config's `run_dir` written relative to it ("${run_dir}/encoder"), so that a run directory
    compares equal to itself wherever it lives; then `inputs`. JSON-normalised (tuples as lists, keys sorted)."""
    picked: dict = {}
    for section in sections:
        *parents, name = section.split(".")
        source, target = config, picked
        for parent in parents:
            source = source.get(parent) if isinstance(source, Mapping) else None
            target = target.setdefault(parent, {})
        value = source.get(name) if isinstance(source, Mapping) else None
        target[name] = OmegaConf.to_container(value, resolve=True) if isinstance(value, (DictConfig, ListConfig)) \
            else value
    for path in ignoring:
        *parents, name = path.split(".")
        node = picked
        for parent in parents:
            node = node.get(parent) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(name, None)
    counted = portable(without_never_counted(picked), str(config.get("run_dir") or ""))
    return json.loads(json.dumps({**counted, **inputs}, sort_keys=True, default=str))


def identity_hash(value: dict) -> str:
    """16 hex digits of the SHA-256 of an identity."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def without_never_counted(node):
    """`node` without the keys of NEVER_COUNT, at any depth."""
    if isinstance(node, dict):
        return {key: without_never_counted(value) for key, value in node.items() if key not in NEVER_COUNT}
    if isinstance(node, list):
        return [without_never_counted(value) for value in node]
    return node


def portable(node, run_dir: str):
    """Paths inside the run directory rewritten relative to it ("${run_dir}/encoder")."""
    if isinstance(node, dict):
        return {key: portable(value, run_dir) for key, value in node.items()}
    if isinstance(node, list):
        return [portable(value, run_dir) for value in node]
    root = run_dir.rstrip("/")
    if isinstance(node, str) and root and (node == root or node.startswith(root + "/")):
        return "${run_dir}" + node[len(root):]
    return node
