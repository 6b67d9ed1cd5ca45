"""The framework-free side of data parallelism (specc.distributed) and its
command-line checks; the backends' own tests are test_parallel_jax.py and
test_parallel_torch.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from specc import cli
from specc.distributed import DistributedError, World, batch_slice, check_batch, torch_worker_env

MLP = Path(__file__).resolve().parent.parent / "specs" / "mlp.spec"


@pytest.mark.parametrize("size, parts, expected", [
    (128, 2, [(0, 64), (64, 128)]),
    (7, 3, [(0, 3), (3, 5), (5, 7)]),  # the first size % parts parts take one more row
    (2, 4, [(0, 1), (1, 2), (2, 2), (2, 2)]),
    (5, 1, [(0, 5)]),
])
def test_batch_slices_are_contiguous_and_cover_the_batch_in_order(size, parts, expected):
    assert [batch_slice(size, parts, i) for i in range(parts)] == expected


def test_a_batch_that_does_not_split_names_the_nearest_that_do():
    check_batch(128, 2)
    check_batch(7, 1)
    with pytest.raises(DistributedError) as err:
        check_batch(100, 3)
    assert "batch 100 does not split evenly over 3 devices" in err.value.message
    assert err.value.hint == "use --batch 99 or --batch 102"
    check_batch(4, 4)


def test_more_devices_than_batch_rows_says_so():
    with pytest.raises(DistributedError) as err:
        check_batch(8, 10**20)
    assert "100000000000000000000 devices but a batch of 8" in err.value.message
    assert err.value.hint == "use at most --devices 8, or --batch 100000000000000000000 or more"


def test_world_records_devices_and_processes():
    world = World(devices=4, processes=2, rank=1, local_devices=2)
    assert (world.chief, world.parallel, world.to_dict()) == (False, True, {"devices": 4, "processes": 2})
    assert World().chief and not World().parallel


def test_torch_worker_env_reads_torchrun_variables():
    assert torch_worker_env({}) is None
    assert torch_worker_env({"RANK": "1", "WORLD_SIZE": "2"}) == {
        "RANK": 1, "WORLD_SIZE": 2, "LOCAL_RANK": 1, "LOCAL_WORLD_SIZE": 2}
    with pytest.raises(DistributedError):
        torch_worker_env({"RANK": "one", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("flags, message", [
    (["--devices", "0"], "--devices must be a positive integer, got 0"),
    (["--coordinator", "localhost:1234"], "--coordinator needs --num-processes and --process-id too"),
    (["--coordinator", "localhost:1234", "--num-processes", "2", "--process-id", "2"],
     "--process-id 2 is not below --num-processes 2"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"],
     "--coordinator localhost is not HOST:PORT"),
    (["--backend", "torch", "--num-processes", "2"], "--num-processes is for jax.distributed (--backend jax)"),
])
def test_parallel_flags_are_checked_before_anything_runs(flags, message, capsys, tmp_path):
    out = tmp_path / "run"
    assert cli.main(["train", str(MLP), "--out", str(out), *flags]) == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == f"specc: error: {message}"
    assert not out.exists()
