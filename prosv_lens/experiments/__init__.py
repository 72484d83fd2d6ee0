"""Experiment runners: the paper's experiments end to end, resumable, planned before they run.

Everything that trains, judges and writes a result folder lives here, above the library (which
never imports it): :mod:`~prosv_lens.experiments.reproduce` (``prosv reproduce``),
:mod:`~prosv_lens.experiments.demo` (``prosv demo``), :mod:`~prosv_lens.experiments.sweeps`
(``prosv sweep``), :mod:`~prosv_lens.experiments.analysis` (``prosv analyse``) and
:mod:`~prosv_lens.experiments.claims` (``prosv report``: the paper's claims against saved results).
Runs split into work units (:mod:`~prosv_lens.experiments.units`) go in this process or on Ray
workers (:mod:`~prosv_lens.experiments.ray_executor`, ``prosv sweep --workers N``).

``prosv reproduce SETTING`` (:func:`run_reproduce`) runs one row of the paper's main table —
PrOSV and FSSV trained jointly, DiffMean and prompt baselines, AxBench-style judged steering and
utility — for a registered :class:`Setting` (:data:`SETTINGS`); :func:`dry_run` plans its memory
and time on a device without loading anything. See ``docs/reproduce.md``.
"""

from prosv_lens.experiments.plan import DeviceInfo, Plan, Resources, plan_run, probe_device
from prosv_lens.experiments.preflight import ReproduceConfig, dry_run, make_config, train_config
from prosv_lens.experiments.reproduce import run_reproduce
from prosv_lens.experiments.settings import SETTINGS, ModelShape, RunSizes, Setting, get_setting

__all__ = [
    "SETTINGS",
    "DeviceInfo",
    "ModelShape",
    "Plan",
    "ReproduceConfig",
    "Resources",
    "RunSizes",
    "Setting",
    "dry_run",
    "get_setting",
    "make_config",
    "plan_run",
    "probe_device",
    "run_reproduce",
    "train_config",
]
