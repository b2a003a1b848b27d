"""Ground-level pieces every package may import (model/, mpu/, data_utils/, training/, tasks/, tools/):
the user-facing error types and the CLI wrapper (``errors``), the progress display (``progress``).
Nothing here imports another package of the repository."""
