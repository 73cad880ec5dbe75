"""The second numeric configuration really changes floating-point results, so that passing under both
configurations means something: the same computation gives other bits, within float32 rounding."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from kernel_env import kernel_environment, numerics_environment

PROBE = """
import json, torch
torch.manual_seed(0)
x, w = torch.randn(64, 384), torch.randn(384, 1536)
hidden = torch.nn.functional.layer_norm(torch.nn.functional.gelu(x @ w), (1536,))  # an encoder layer's arithmetic
print(json.dumps({"threads": torch.get_num_threads(), "capability": torch.backends.cpu.get_cpu_capability(),
                  "values": hidden[:4, :8].flatten().tolist(), "sum": hidden.double().abs().sum().item()}))
"""


def _run(numerics: str) -> dict:
    env = {**os.environ, **numerics_environment(numerics)}
    if numerics == "native":
        for name in numerics_environment("alternate"):
            if name != "COURSE_NUMERICS":
                env.pop(name, None)
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120,
                          check=True)
    return json.loads(done.stdout)


def test_alternate_configuration_changes_the_bits_but_not_the_result():
    native, alternate = _run("native"), _run("alternate")
    assert alternate["threads"] == 1 and alternate["capability"] == "DEFAULT"
    assert native["values"] != alternate["values"], "the alternate configuration computed the same bits"
    assert native["sum"] == pytest.approx(alternate["sum"], rel=1e-5)
    for a, b in zip(native["values"], alternate["values"]):
        assert a == pytest.approx(b, abs=1e-4)


def test_kernels_of_notebook_runs_get_the_configuration_they_are_asked_for():
    env = kernel_environment("quick", base={}, numerics="alternate")
    assert env["ATEN_CPU_CAPABILITY"] == "default" and env["OMP_NUM_THREADS"] == "1"
    assert kernel_environment("quick", base={})["COURSE_NUMERICS"] == "native"
    with pytest.raises(ValueError, match="unknown numeric configuration 'fast'"):
        numerics_environment("fast")


@pytest.mark.slow
def test_a_notebook_kernel_runs_under_the_alternate_configuration(tmp_path):
    import nbformat

    from nbval_runs import run_nbval
    from stored_outputs import execution_record

    probe = "import torch\nprint(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads())"
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    cell = nbformat.v4.new_code_cell(probe, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="DEFAULT 1\n")]
    nb.cells.append(cell)
    nb.metadata["course"] = {"executed": execution_record(nb, "quick")}
    path = tmp_path / "97_probe.ipynb"
    nbformat.write(nb, path)
    assert run_nbval(path, workdir=tmp_path, numerics="alternate").passed
    assert not run_nbval(path, workdir=tmp_path, numerics="native").passed  # the native kernel vectorises
