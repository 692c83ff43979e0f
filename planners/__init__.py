"""Sampling planners (CEM, MPPI, iCEM) that minimise an energy over bounded action sequences, batched.

`energy_fn(actions (B, S, H, D)) -> (B, S)`; `planner.plan(energy_fn, init_mean (B, H, D) | None,
generator) -> PlanResult` with `actions (B, H, D)`. Knows nothing of envs or world models.
"""
from planners.base import EnergyFn, Planner, PlanResult, SamplingPlanner, shift_plan
from planners.cem import CEMPlanner
from planners.factory import make_planner
from planners.icem import ICEMPlanner
from planners.mppi import MPPIPlanner

__all__ = ["CEMPlanner", "EnergyFn", "ICEMPlanner", "MPPIPlanner", "PlanResult", "Planner", "SamplingPlanner",
           "make_planner", "shift_plan"]
