"""The standalone simulator (``python -m capture.simulator``) defaults to wall
time, so the exchange-lag histogram of a shard pointed at it is meaningful."""
from capture.simulator.__main__ import parse_args, scenario_from


def test_standalone_default_clock_is_wall_time():
    assert scenario_from(parse_args([])).clock == "wall"
    assert scenario_from(parse_args(["--clock", "sim"])).clock == "sim"
    # a scenario that names its clock keeps it
    assert scenario_from(parse_args(["--scenario-json", '{"clock": "sim"}'])).clock == "sim"
    assert scenario_from(parse_args(["--scenario-json", '{"seed": 4}'])).clock == "wall"
