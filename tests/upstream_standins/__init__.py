"""Upstream-shaped stand-ins for the tests of `ssg_core.integrations` (no upstream code).

This folder plays an upstream checkout: it holds top-level packages named as upstream's
(`models` as in FoundationVision/VAR, `infinity` and `tools` as in FoundationVision/Infinity,
`hart` as in mit-han-lab/hart) whose sampling loops have the same structure, names and call
signatures as upstream's `autoregressive_infer_cfg`, around a tiny random network instead of a
transformer. Each loop also takes `ssg=`, applied where this project's own models apply it, so the
tests can compare `enable_ssg` with a direct call.

Tests import the packages as `upstream_standins.<name>` (beside this project's own `hart`), or put
this folder first on `sys.path` in a subprocess, as a researcher's checkout would be.
"""
