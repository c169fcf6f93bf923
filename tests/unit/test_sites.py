"""Retired systems, shared profile folders, architectures, profile against cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from djhpc import config, resources, sites
from djhpc.config import Settings
from djhpc.errors import UsageError
from djhpc.executors import slurm_tools as slurm
from djhpc.executors.slurm import submitit_parameters

DATA = Path(__file__).parent / "data" / "slurm"


def test_fram_is_retired_with_the_alternatives() -> None:
    with pytest.raises(UsageError) as error:
        config.find_profile("fram")
    assert "decommissioned Fram" in error.value.message
    assert "saga, betzy or olivia" in error.value.message


def test_a_profile_of_ones_own_named_fram_still_wins(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    (tmp_path / "djhpc" / "profiles").mkdir(parents=True)
    (tmp_path / "djhpc" / "profiles" / "fram.yaml").write_text("partition: x\n")
    assert config.load_profile("fram") == {"partition": "x"}


def test_site_and_lab_profile_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lab, site = tmp_path / "lab", tmp_path / "etc"
    (lab).mkdir()
    (site / "djhpc" / "profiles").mkdir(parents=True)
    (lab / "labsaga.yaml").write_text("partition: normal\naccount: nn1234k\n")
    (site / "djhpc" / "profiles" / "sitewide.yaml").write_text("partition: bigmem\n")
    (site / "djhpc" / "profiles" / "labsaga.yaml").write_text("partition: shadowed\n")
    monkeypatch.setenv("DJHPC_PROFILE_PATH", f"{tmp_path / 'missing'}:{lab}")
    monkeypatch.setenv("XDG_CONFIG_DIRS", str(site))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home"))
    assert {"labsaga", "sitewide", "saga"} <= set(config.available_profiles())
    assert config.load_profile("labsaga") == {"partition": "normal", "account": "nn1234k"}
    assert config.load_profile("sitewide") == {"partition": "bigmem"}


def test_default_site_folder_is_etc_xdg() -> None:
    assert sites.site_profile_dirs({}) == [Path("/etc/xdg/djhpc/profiles")]


def test_olivia_architectures_and_the_warning() -> None:
    arch = config.load_architectures("olivia")
    assert arch["accel"] == "aarch64" and arch["small"] == "x86_64"
    text = sites.architecture_warning(arch, "accel", machine="x86_64")
    assert text is not None and "aarch64" in text and "will not run" in text
    assert sites.architecture_warning(arch, "small", machine="x86_64") is None
    assert sites.architecture_warning(arch, "small", machine="arm64") is not None
    assert sites.architecture_warning({}, "accel", machine="x86_64") is None


def test_optimist_and_preproc_profiles() -> None:
    optimist = config.load_profile("saga-optimist")
    assert optimist["partition"] == "optimist" and optimist["requeue"] >= 10
    assert optimist["slurm"] == {"additional_parameters": {"requeue": True}}
    betzy = config.load_profile("betzy")
    assert betzy["qos"] == "preproc" and betzy["max_parallel"] == 16
    assert config.load_rules("betzy").max_time_s == 86400
    res = resources.resources(Settings(**optimist).replace(account="nn1k"), None,
                            config.load_rules("saga-optimist"))
    assert submitit_parameters(res, 60)["additional_parameters"] == {"requeue": True}


def test_partition_parsed_from_real_scontrol_output() -> None:
    (info,) = slurm.parse_partitions((DATA / "scontrol_partition_22.05.8.txt").read_text()).values()
    assert info.name == "debug" and info.max_time_s is None  # MaxTime=UNLIMITED
    assert info.billing_weights == "CPU=1.0,Mem=0.2577031G"


def test_associations_of_the_user() -> None:
    # sacctmgr -n -P show assoc where user=root format=Account,User,MaxSubmitJobs,MaxJobs
    assert sites.parse_associations("root|root||\n", "root") == sites.Association(("root",))
    text = "nn1234k|alice|1000|400\nnn9999k|alice|500|\nother|bob|10|1\n"
    assoc = sites.parse_associations(text, "alice")
    assert assoc == sites.Association(("nn1234k", "nn9999k"), 500, 400)
    note = sites.submit_limit_note(assoc)
    assert note is not None and "500" in note


def test_differences_name_what_does_not_match() -> None:
    facts = sites.ClusterFacts("normal", None, 1001, sites.Association(("root",), 100, 8))
    found = sites.differences(facts, 7 * 86400, "nn0000k", 5000, 16)
    assert "partition 'normal' does not exist on this cluster (see `sinfo -s`)" in found
    assert any("MaxArraySize 1001" in d for d in found)
    assert any("account 'nn0000k' is not one of yours here (root)" in d for d in found)
    assert any("above your MaxJobs 8" in d for d in found)
    info = slurm.parse_partitions("PartitionName=normal MaxTime=1-00:00:00")["normal"]
    ok = sites.ClusterFacts("normal", info, 1001, sites.Association(("nn0000k",)))
    assert sites.differences(ok, 86400, "nn0000k", None, None) == []
    (too_long,) = sites.differences(ok, 7 * 86400, "nn0000k", None, None)
    assert "at most 1-00:00:00" in too_long


def test_a_run_bigger_than_max_submit_jobs_is_flagged(monkeypatch: pytest.MonkeyPatch) -> None:
    from djhpc import lifecycle as runs

    monkeypatch.setattr(sites, "user_associations",
                        lambda user=None: sites.Association(("nn1k",), 100, None))
    (text,) = runs._submit_limit_warnings("slurm", 150)
    assert text.startswith("this run has 150 tasks; you may have at most 100 jobs queued")
    assert runs._submit_limit_warnings("slurm", 100) == []
    assert runs._submit_limit_warnings("local", 150) == []
    assert runs._within_submit_limit(1001, sites.Association((), 100)) == 100
    assert runs._within_submit_limit(1001, None) == 1001
