"""Profiles and resources: validated before anything is recorded."""

import pytest

from djhpc import config, resources
from djhpc.config import Settings
from djhpc.errors import UsageError
from djhpc.executors.slurm import submitit_parameters


def test_shipped_profiles_load_and_validate() -> None:
    names = config.available_profiles()
    assert {"local", "idun", "saga", "saga-optimist", "betzy", "olivia"} <= set(names)
    assert "fram" not in names
    for name in names:
        values = config.load_profile(name)
        rules = config.load_rules(name)
        settings = Settings(**values).replace(account="nn0000k")
        resources.resources(settings, None, rules)


def test_sigma2_needs_an_account() -> None:
    settings = Settings(**config.load_profile("saga"))
    with pytest.raises(UsageError, match="requires an account"):
        resources.resources(settings, None, config.load_rules("saga"))


def test_unknown_profile_lists_known_ones() -> None:
    with pytest.raises(UsageError) as error:
        config.find_profile("sagga")
    assert "saga" in error.value.message


@pytest.mark.parametrize(("field", "value", "match"), [
    ("mem", "lots", "Invalid memory"),
    ("time", "-1", "Invalid time"),
    ("time", "soon", "Invalid time"),
])
def test_invalid_resources(field: str, value: str, match: str) -> None:
    with pytest.raises(UsageError, match=match):
        resources.resources(Settings().replace(**{field: value}))


def test_walltime_over_the_profile_limit() -> None:
    settings = Settings(**config.load_profile("betzy")).replace(account="nn1k", time="2-00:00:00")
    with pytest.raises(UsageError, match="exceeds"):
        resources.resources(settings, None, config.load_rules("betzy"))


def test_per_table_overrides_and_submitit_mapping() -> None:
    settings = Settings(tables={"MyTable": {"mem": "64G", "time": "12:00:00",
                                            "slurm": {"constraint": "skylake"}}})
    res = resources.resources(settings, "MyTable")
    assert res.mem_mb == 64 * 1024 and res.time_s == 12 * 3600
    params = submitit_parameters(res, signal_delay_s=120)
    assert params["time"] == 720 and params["mem"] == "65536M"
    assert params["constraint"] == "skylake" and params["signal_delay_s"] == 120
    assert resources.resources(settings, "Other").mem_mb == 4096


def test_unknown_table_override_key() -> None:
    settings = Settings(tables={"MyTable": {"memory": "64G"}})
    with pytest.raises(UsageError, match="Valid settings"):
        resources.resources(settings, "MyTable")


def test_unknown_slurm_option_lists_valid_ones() -> None:
    with pytest.raises(UsageError, match="constraint"):
        resources.resources(Settings(slurm={"constraints": "x"}))


def test_short_tasks_get_a_proportionate_warning_signal() -> None:
    res = resources.resources(Settings(time="0:01:00"))
    assert submitit_parameters(res, 120)["signal_delay_s"] == 30
