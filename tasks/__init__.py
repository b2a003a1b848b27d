"""tasks package.

Keep this file free of imports: ``tools/evaluate.py`` imports ``tasks.metrics`` (standard library only) and
must start without pulling in torch or the task modules (checked by tests/test_evaluate_cli.py).
"""
