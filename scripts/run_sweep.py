"""Deprecated shim: use ``prosv sweep CONFIG --out OUT_DIR`` (this forwards to it)."""

import sys

from prosv_lens.cli import main

if __name__ == "__main__":
    config, out, *rest = sys.argv[1:]
    raise SystemExit(main(["sweep", config, "--out", out, *rest]))
