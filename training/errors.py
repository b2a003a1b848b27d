"""Compatibility name of ``common.errors`` (moved there so that model/ and data_utils/ need not import
training/). New code imports ``common.errors``."""

from common.errors import (  # noqa: F401
    EXIT_DATA,
    EXIT_USAGE,
    DataError,
    UsageError,
    exit_code,
    one_line,
    read_json_object,
    run_cli,
)
