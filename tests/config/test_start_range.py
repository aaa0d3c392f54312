"""``start_at`` is checked into the range of instants the journal can hold."""

from __future__ import annotations

import json

import pytest
from runflow_tail.config.load import load_settings
from runflow_tail.errors import ConfigError


@pytest.mark.parametrize(
    "start_at", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00Z", "-99999999999d"]
)
def test_a_start_outside_the_representable_range_is_a_configuration_problem(
    start_at: str,
) -> None:
    """check-config refuses a start_at outside 1677-2262 and says which range holds."""
    with pytest.raises(ConfigError) as raised:
        load_settings(
            config_file=None,
            environ={
                "RUNFLOW_API_KEY": "rf_0123456789",
                "RUNFLOW_TAIL_STREAMS": json.dumps([{"name": "all", "start_at": start_at}]),
            },
        )
    [problem] = raised.value.problems
    assert "streams[0].start_at" in problem and "2262-04-11" in problem
