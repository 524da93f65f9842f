"""Evaluation: influence baselines, case deletion, fixing mistakes (and data-debugging diagnostics).

Submodules are imported on use so that ``import tracinwe`` stays light:
`tracinwe.evaluate.baselines`, `tracinwe.evaluate.deletion`, `tracinwe.evaluate.fix`,
`tracinwe.evaluate.small_training`.
"""
