"""The long-format metrics schema: column names, dtypes and the error raised for bad data.

One row per observation. ``features`` owns these names; every other package
imports them from here rather than spelling the strings again.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

TIMESTAMP = "timestamp"
SERVICE = "service"
METRIC = "metric"
VALUE = "value"
LABELS = "labels"
IS_ANOMALY = "is_anomaly"
#: The kind of a labelled incident ("spike", "level_shift", ...); empty when normal.
INCIDENT = "incident"
#: Hive partition key derived from the timestamp; never part of a frame handed to models.
DATE = "date"

REQUIRED_COLUMNS = (TIMESTAMP, SERVICE, METRIC, VALUE)
OPTIONAL_COLUMNS = (LABELS, IS_ANOMALY, INCIDENT)
PARTITION_COLUMNS = (SERVICE, METRIC, DATE)

#: The Arrow schema of a stored row (partition columns are carried by the directory names).
ARROW_SCHEMA = pa.schema(
    [
        pa.field(TIMESTAMP, pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field(SERVICE, pa.string(), nullable=False),
        pa.field(METRIC, pa.string(), nullable=False),
        pa.field(VALUE, pa.float64()),
        pa.field(LABELS, pa.map_(pa.string(), pa.string())),
        pa.field(IS_ANOMALY, pa.bool_()),
        pa.field(INCIDENT, pa.string()),
    ]
)


class DataValidationError(ValueError):
    """Bad metrics data, located as precisely as we can: file, column and row.

    ``row`` is the 0-based position of the offending row in the file or frame
    that was handed in (for a CSV, the data row after the header).
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
    ) -> None:
        self.file = file
        self.column = column
        self.row = row
        where = []
        if file is not None:
            where.append(f"file {file}")
        if column is not None:
            where.append(f"column {column!r}")
        if row is not None:
            where.append(f"row {row}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


def first_bad_row(mask: np.ndarray | pd.Series, index: pd.Index) -> int:
    """The row a :class:`DataValidationError` names for the first True of ``mask``.

    The frame's own label when it has an integer index (a file's row number),
    else the position.
    """
    position = int(np.flatnonzero(np.asarray(mask))[0])
    return int(index[position]) if pd.api.types.is_integer_dtype(index) else position
