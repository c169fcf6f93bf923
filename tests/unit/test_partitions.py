"""Partition limits, node sizes and pending reasons: parsers against pasted Slurm output."""

from __future__ import annotations

import pytest

from djhpc.executors import slurm_tools as slurm

# `scontrol show partition -o` and `scontrol show node -o` on the local Slurm 22.05.8
# (scripts/local-slurm.sh: one node advertising 8 CPUs and 8000 MB).
LOCAL_PARTITIONS = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL "
    "Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 "
    "Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO "
    "MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO "
    "ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=8 "
    "TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=8,mem=8000M,node=1,billing=8\n"
)
LOCAL_NODES = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=8  CPUAlloc=0 CPUEfctv=8 CPUTot=8 CPULoad=1.11 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) NodeAddr=127.0.0.1 "
    "NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v657 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=8000 AllocMem=0 FreeMem=18290 Sockets=1 Boards=1 State=IDLE ThreadsPerCore=1 "
    "TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  "
    "BootTime=2026-11-26T06:56:15 SlurmdStartTime=2026-11-26T07:11:06 "
    "LastBusyTime=2026-11-26T07:14:44 CfgTRES=cpu=8,mem=8000M,billing=8 AllocTRES= "
    "CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s ExtSensorsWatts=0 "
    "ExtSensorsTemp=n/s\n"
)

# The multi-line form (without -o), as a cluster's documentation pastes it: a CPU
# partition with billing weights and a GPU partition (public cluster notes).
MULTILINE_PARTITIONS = """\
PartitionName=htc
   AllowGroups=ALL AllowAccounts=ALL AllowQos=short,normal,long
   AllocNodes=ALL Default=YES QoS=N/A
   DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 Hidden=NO
   MaxNodes=1 MaxTime=UNLIMITED MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=htc-1024-n[0-3],htc-n[24-49]
   PriorityJobFactor=1 PriorityTier=1 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=CANCEL
   State=UP TotalCPUs=1792 TotalNodes=30 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerNode=UNLIMITED MaxMemPerNode=UNLIMITED
   TRES=cpu=1792,mem=19587200M,node=30,billing=2448
   TRESBillingWeights=CPU=1.0,Mem=0.128G

PartitionName=gpu
   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL
   AllocNodes=ALL Default=NO QoS=N/A
   DefaultTime=00:01:00 DisableRootJobs=NO Exclusive=NO GraceTime=0 Hidden=NO
   MaxNodes=UNLIMITED MaxTime=7-00:00:00 MinNodes=0 LLN=NO MaxCPUsPerNode=UNLIMITED
   Nodes=gpu004
   PriorityJobFactor=4 PriorityTier=4 RootOnly=NO ReqResv=NO OverSubscribe=NO
   OverTimeLimit=NONE PreemptMode=OFF
   State=UP TotalCPUs=64 TotalNodes=1 SelectTypeParameters=NONE
   JobDefaults=(null)
   DefMemPerCPU=920 MaxMemPerCPU=1840
   TRES=cpu=62,mem=750G,node=1,billing=264,gres/gpu=1,gres/gpu:nvidia_h100_nvl=1
   TRESBillingWeights=CPU=1.0,Mem=0.25G,GRES/gpu=1,GRES/gpu:nvidia_h100_nvl=14
"""

# `squeue -h [-r] -o <SQUEUE_FORMAT>` on the local Slurm 22.05.8: job 27 is
# `sbatch --array=0-5%1 --wrap 'sleep 30'`, job 28 `sbatch -c 64` on the 8-CPU node.
SQUEUE_WITH_REASONS = """\
27_[1-5%1]|PENDING||0:00|UNLIMITED|1|256M|N/A|JobArrayTaskLimit
27_0|RUNNING|vm|0:01|UNLIMITED|1|256M|2026-11-26T07:16:30|None
28|PENDING||0:00|UNLIMITED|64|256M|N/A|PartitionConfig
"""


def test_parse_local_partition() -> None:
    parts = slurm.parse_partitions(LOCAL_PARTITIONS)
    debug = parts["debug"]
    assert debug.default and debug.state == "UP" and debug.nodes == "vm"
    assert debug.max_time_s is None and debug.max_cpus_per_node is None
    assert debug.max_mem_per_node_mb is None and debug.billing_weights is None
    assert (debug.total_cpus, debug.total_nodes) == (8, 1)
    assert debug.tres == "cpu=8,mem=8000M,node=1,billing=8" and debug.gpus is None


def test_parse_multiline_partitions_with_weights_and_gpus() -> None:
    parts = slurm.parse_partitions(MULTILINE_PARTITIONS)
    assert list(parts) == ["htc", "gpu"]
    assert parts["htc"].billing_weights == "CPU=1.0,Mem=0.128G" and parts["htc"].default
    gpu = parts["gpu"]
    assert gpu.max_time_s == 7 * 86400 and not gpu.default
    assert gpu.max_mem_per_cpu_mb == 1840 and gpu.gpus == 1
    assert gpu.billing_weights.startswith("CPU=1.0,Mem=0.25G,GRES/gpu=1")  # type: ignore[union-attr]


def test_nodes_give_each_partition_its_largest_node() -> None:
    nodes = slurm.parse_nodes(LOCAL_NODES)
    assert nodes["vm"] == slurm.Node("vm", 8, 8000.0, 0, ("debug",))
    debug = slurm.with_nodes(slurm.parse_partitions(LOCAL_PARTITIONS), nodes)["debug"]
    assert (debug.node_cpus, debug.node_mem_mb, debug.node_gpus) == (8, 8000.0, 0)


def test_gres_gpus() -> None:
    text = LOCAL_NODES.replace("Gres=(null)", "Gres=gpu:a100:4(S:0-1),gpu:v100:2")
    assert slurm.parse_nodes(text)["vm"].gpus == 6


@pytest.mark.parametrize(("request_", "words"), [
    ({"cpus": 64}, "64 CPUs per task, but partition 'debug' has at most 8 per node"),
    ({"mem_mb": 9000}, "allows at most 8000 MB per node"),
    ({"gpus": 1}, "has no GPUs per node"),
])
def test_resource_problems_name_the_limit(request_: dict[str, float], words: str) -> None:
    debug = slurm.with_nodes(slurm.parse_partitions(LOCAL_PARTITIONS),
                             slurm.parse_nodes(LOCAL_NODES))["debug"]
    asked = {"cpus": 1, "mem_mb": 256.0, "gpus": 0, "time_s": 600.0, **request_}
    problems = slurm.resource_problems(debug, **asked)  # type: ignore[arg-type]
    assert len(problems) == 1 and words in problems[0]


def test_resource_problems_max_time_and_fitting_request() -> None:
    gpu = slurm.parse_partitions(MULTILINE_PARTITIONS)["gpu"]
    assert slurm.resource_problems(gpu, cpus=4, mem_mb=4000, gpus=1, time_s=86400) == []
    [problem] = slurm.resource_problems(gpu, cpus=4, mem_mb=4000, gpus=1, time_s=8 * 86400)
    assert "MaxTime is 7-00:00:00" in problem and "8-00:00:00" in problem


def test_squeue_reasons() -> None:
    tasks = slurm.parse_squeue(SQUEUE_WITH_REASONS)
    assert {tasks[f"27_{i}"].reason for i in range(1, 6)} == {"JobArrayTaskLimit"}
    assert tasks["27_0"].reason is None  # running: squeue says "None"
    assert tasks["28"].reason == "PartitionConfig" and tasks["28"].cpus == 64


def test_squeue_without_the_reason_column_still_parses() -> None:
    old = "\n".join(line.rsplit("|", 1)[0] for line in SQUEUE_WITH_REASONS.splitlines())
    tasks = slurm.parse_squeue(old)
    assert len(tasks) == 7 and all(t.reason is None for t in tasks.values())


@pytest.mark.parametrize(("reason", "words"), [
    ("PartitionConfig", "never start"),
    ("AssocGrpBillingMinutes", "quota"),
    ("QOSMaxJobsPerUserLimit", "as many jobs"),
    ("Resources", "free CPUs"),
    ("Priority", "higher priority"),
    ("JobArrayTaskLimit", "--max-parallel"),
    ("AssocGrpGRESMinutes", "account"),  # a family member without its own entry
    ("QOSMaxGRESPerUser", "QOS"),
])
def test_pending_reason_text(reason: str, words: str) -> None:
    assert words in (slurm.pending_reason_text(reason) or "")


@pytest.mark.parametrize("reason", [None, "None", "", "(None)", "SomethingNew"])
def test_no_text_for_no_or_unknown_reason(reason: str | None) -> None:
    assert slurm.pending_reason_text(reason) is None
