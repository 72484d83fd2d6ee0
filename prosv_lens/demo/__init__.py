"""``prosv demo``: the whole pipeline (data, training, baselines, judged steering, utility,
robustness, report) on the embedded model."""

from prosv_lens.demo.pipeline import DemoConfig, run_demo

__all__ = ["DemoConfig", "run_demo"]
