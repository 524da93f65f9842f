"""Evaluation: influence baselines, case deletion, LDS, fixing mistakes (and data-debugging diagnostics).

Submodules are imported on use so that ``import tracinwe`` stays light:
`tracinwe.evaluate.baselines`, `tracinwe.evaluate.deletion`, `tracinwe.evaluate.lds`, `tracinwe.evaluate.fix`.
The small models they retrain live in `tracinwe.training.small`. Every result type
(`tracinwe.evaluate.result.EvaluationResult`) has ``to_json()``, ``markdown()`` and ``rich_table()``.
"""
