"""The evaluation report: `report.html` in an evaluation directory (`DIR/eval/report.html`), read offline.

    python -m agent.report runs/quick/eval        # written by `jepa-agent evaluate` and `run`; this remakes it

Made from what the evaluation wrote, for every agent found in the directory (the latent agent, the random
floor, the oracle ceiling, in that order): its `metrics.json` (the success table, reached and held, with
their 95% bootstrap intervals), its `episodes.jsonl` (a row for each episode the metrics summarise) and its
`videos/*.mp4` (played in the page through relative paths, so the directory can be moved or copied whole).
Two plots are embedded as PNG data: success within a step budget, and every episode's distances; the plots
the benchmarks wrote into the directory's `plots/` are shown after them. The page loads nothing from the
network. Its template is `report_template.html` beside this module (Jinja2).
"""
from __future__ import annotations

import base64
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from bookkeeping.io import atomic_write_text, read_json

REPORT_FILE = "report.html"
TEMPLATE_FILE = "report_template.html"
PLOTS_DIR = "plots"  # PNGs the benchmarks made for this evaluation (`benchmarks.success_vs_budget`), shown too
AGENT_ORDER = ("latent", "pixel", "random", "oracle", "expert")  # the agents first, then the floor and ceilings
COLOURS = {"latent": "tab:blue", "pixel": "tab:orange", "random": "tab:gray", "oracle": "tab:green",
           "expert": "tab:olive"}


@dataclass
class AgentResult:
    """One agent's evaluation: its metrics, the episodes they summarise, and its videos (relative paths)."""

    name: str
    metrics: dict
    episodes: list[dict]
    videos: dict[tuple[int, int], str]  # (seed, pair) -> path relative to the evaluation directory


def load_agent(agent_dir: Path) -> AgentResult:
    """An agent's results from `agent_dir` (`metrics.json`, `episodes.jsonl`, `videos/`)."""
    metrics = read_json(agent_dir / "metrics.json")
    seeds, pairs = set(metrics["seeds"]), int(metrics["config"]["evaluate"]["pairs"])
    lines = (agent_dir / "episodes.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines if line.strip()]
    episodes = sorted((r for r in records if r["seed"] in seeds and r["pair"] < pairs),  # those metrics summarise
                      key=lambda r: (r["seed"], r["pair"]))
    shown = {(r["seed"], r["pair"]) for r in episodes}
    videos = {}
    for video in sorted((agent_dir / "videos").glob("seed*_pair*.mp4")):  # written by agent.evaluate
        seed, _, pair = video.stem.removeprefix("seed").partition("_pair")
        if seed.isdigit() and pair.isdigit() and (int(seed), int(pair)) in shown:
            videos[(int(seed), int(pair))] = f"{agent_dir.name}/videos/{video.name}"
    return AgentResult(agent_dir.name, metrics, episodes, videos)


def load_agents(evaluation_dir: Path) -> list[AgentResult]:
    """Every agent evaluated in `evaluation_dir` (a folder with a `metrics.json`), in AGENT_ORDER."""
    found = [path.parent for path in evaluation_dir.glob("*/metrics.json")]
    found.sort(key=lambda path: (AGENT_ORDER.index(path.name) if path.name in AGENT_ORDER else len(AGENT_ORDER),
                                 path.name))
    if not found:
        raise FileNotFoundError(f"evaluation directory {str(evaluation_dir)!r} holds no <agent>/metrics.json; "
                                "expected the output of `jepa-agent evaluate` (paths.evaluation)")
    return [load_agent(path) for path in found]


def png_data_uri(figure) -> str:
    """A matplotlib figure as a `data:image/png;base64,...` URI (the page carries its images)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def success_by_step_plot(agents: list[AgentResult], budget: int) -> str:
    """Fraction of episodes that reached the goal within t task steps, t = 0 .. budget, per agent."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend to switch

    figure = Figure(figsize=(6, 3.6))
    axis = figure.subplots()
    steps = list(range(budget + 1))
    for agent in agents:
        reached = [r["steps_to_success"] for r in agent.episodes if r["success"]]
        fractions = [sum(s <= t for s in reached) / max(len(agent.episodes), 1) for t in steps]
        axis.step(steps, fractions, where="post", label=agent.name, color=COLOURS.get(agent.name))
    axis.set(xlabel="task steps", ylabel="reached within that many steps", ylim=(-0.02, 1.02),
             title="success vs step budget")
    axis.legend()
    figure.tight_layout()
    return png_data_uri(figure)


def distance_plot(agents: list[AgentResult], threshold: float | None) -> str:
    """Every episode's closest distance to its goal and its distance at the end of the budget, per agent."""
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no backend to switch

    figure = Figure(figsize=(6, 3.6))
    axis = figure.subplots()
    for position, agent in enumerate(agents):
        count = len(agent.episodes)
        offsets = [position + 0.3 * (i / max(count - 1, 1) - 0.5) for i in range(count)]  # spread within a column
        closest = [max(r["min_distance"], 1e-4) for r in agent.episodes]
        at_budget = [max(r.get("final_distance_at_budget", r["final_distance"]), 1e-4) for r in agent.episodes]
        colour = COLOURS.get(agent.name)
        axis.scatter(offsets, closest, s=14, color=colour, label="closest" if position == 0 else None)
        axis.scatter(offsets, at_budget, s=14, facecolors="none", edgecolors=colour,
                     label="at the budget's end" if position == 0 else None)
    if threshold:
        axis.axhline(threshold, color="black", linestyle="--", linewidth=1, label="success threshold")
    axis.set_xticks(range(len(agents)), [agent.name for agent in agents])
    axis.set(yscale="log", ylabel="distance to the goal", title="per-episode distances")
    axis.legend(fontsize="small")
    figure.tight_layout()
    return png_data_uri(figure)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def rate_with_interval(rate: float | None, interval: list[float] | None) -> str:
    """0.92, [0.84, 0.98] -> "92.0% [84.0%, 98.0%]" (as the test reads it back from the page)."""
    if rate is None:
        return "n/a"
    return percent(rate) if not interval else f"{percent(rate)} [{percent(interval[0])}, {percent(interval[1])}]"


def render(agents: list[AgentResult], benchmark_plots: list[str] = ()) -> str:
    """The report's HTML for `agents` (the first one's config says the task and protocol), with the PNGs at
    `benchmark_plots` (paths relative to the evaluation directory)."""
    import jinja2

    config = agents[0].metrics["config"]
    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent),
                                     autoescape=True, undefined=jinja2.StrictUndefined)
    environment.filters.update(percent=percent, distance=lambda value: "n/a" if value is None else f"{value:.4f}",
                               seconds=lambda value: "n/a" if value is None else f"{value:.2f}")
    environment.globals.update(rate_with_interval=rate_with_interval)
    plots = {"success vs step budget": success_by_step_plot(agents, int(config["evaluate"]["budget"])),
             "per-episode distances": distance_plot(agents, agents[0].metrics.get("success_threshold")),
             **{Path(path).stem.replace("_", " "): path for path in benchmark_plots}}
    return environment.get_template(TEMPLATE_FILE).render(
        task=agents[0].metrics["task"], evaluate=config["evaluate"], planner=config.get("planner"),
        run_dir=config.get("run_dir"), agents=agents, plots=plots)


def write_report(evaluation_dir: str | Path) -> Path:
    """Write `evaluation_dir/report.html` from the agents evaluated there; returns its path."""
    evaluation_dir = Path(evaluation_dir)
    benchmark_plots = sorted(f"{PLOTS_DIR}/{path.name}" for path in (evaluation_dir / PLOTS_DIR).glob("*.png"))
    return atomic_write_text(evaluation_dir / REPORT_FILE, render(load_agents(evaluation_dir), benchmark_plots))


def main(argv: list[str] | None = None) -> None:
    """`python -m agent.report EVALUATION_DIR`: remake the report of an evaluation directory."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print(f"error: expected one evaluation directory (e.g. runs/quick/eval), got {argv}", file=sys.stderr)
        sys.exit(2)
    try:
        print(write_report(argv[0]))
    except (FileNotFoundError, KeyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
