"""Compatibility name of ``common.progress`` (moved there so that data_utils/ need not import training/).
New code imports ``common.progress``."""

from common.progress import PLAIN_EVERY_S, PlainProgress, plain_interval, report_progress  # noqa: F401
