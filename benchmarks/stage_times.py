"""Stage wall times of `jepa-agent run`: reads DIR/stages.json of finished runs, prints a table,
writes benchmarks/results/stage_times.json.

    python -m benchmarks.stage_times runs/quick runs/reacher
"""
from __future__ import annotations

import json
from pathlib import Path

from benchmarks.arguments import benchmark_parser, run_main
from bookkeeping.io import atomic_write_json, read_json

RESULTS = Path(__file__).resolve().parent / "results" / "stage_times.json"


def main() -> None:
    parser = benchmark_parser(__doc__)
    parser.add_argument("run_dirs", nargs="+", type=Path)
    args = parser.parse_args()
    table = {}
    for run_dir in args.run_dirs:
        book_path = run_dir / "stages.json"
        if not book_path.exists():
            raise FileNotFoundError(f"{book_path} is missing; run `jepa-agent run hydra.run.dir={run_dir}` first")
        book = read_json(book_path)
        table[str(run_dir)] = {stage: entry.get("wall_time_s") for stage, entry in book.items()}
    stages = list(dict.fromkeys(stage for times in table.values() for stage in times))
    print(f"{'stage':<18}" + "".join(f"{Path(run).name:>14}" for run in table))
    for stage in stages:
        cells = [table[run].get(stage) for run in table]
        print(f"{stage:<18}" + "".join(f"{'-' if c is None else f'{c:.0f} s':>14}" for c in cells))
    totals = [sum(t for t in times.values() if t) for times in table.values()]
    print(f"{'total':<18}" + "".join(f"{t:>12.0f} s" for t in totals))
    atomic_write_json(RESULTS, {"stage_wall_time_s": table})


if __name__ == "__main__":
    run_main(main)
