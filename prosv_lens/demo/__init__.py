"""Deprecated home of ``prosv demo``'s runner: use :mod:`prosv_lens.experiments.demo`.

``from prosv_lens.demo import DemoConfig, run_demo`` keeps working for existing users; the runner
moved to :mod:`prosv_lens.experiments.demo` with the other experiment runners.
"""

from prosv_lens.experiments.demo import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
