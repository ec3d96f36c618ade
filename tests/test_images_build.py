"""scripts/build-images, for real: the Python image with numpy, pandas and
pytest built from Debian's packages (mmdebstrap, umoci, skopeo; about a
minute, from the Debian mirror), pulled from its OCI archive, and a
submission that imports numpy judged in it through the shipped language file
(profiles/languages/python3-sci.toml)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import needs_root
from image_support import REPO, cli, ok

import sandbox

IMAGE = "cellblock/python-sci:bookworm"  # profiles/images/python-sci.toml's name:tag


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    needs_root("mmdebstrap --mode=unshare as root (a user needs subordinate ids)")
    work = Path(tempfile.mkdtemp(prefix="cellblock-build-test-"))
    work.chmod(0o755)
    try:
        subprocess.run(
            [str(REPO / "scripts" / "build-images"), "--out", str(work / "out"), "python-sci"],
            check=True,
            timeout=900,
        )
        yield work
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


def test_the_python_image_judges_numpy(built: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = built / "out" / "cellblock-python-sci.oci.tar"
    monkeypatch.setenv("CELLBLOCK_STORE", str(built / "store"))
    ok(cli("pull", f"oci-archive:{archive}:{IMAGE}"))  # the image in it, by its name
    record = json.loads(ok(cli("inspect", IMAGE)))
    packages = record["config"]["labels"]["org.cellblock.packages"]
    assert "python3-numpy=" in packages and "python3-pandas=" in packages, packages

    ran = sandbox.run(
        ["python3", "-c", "import numpy, pandas, pytest; print(numpy.arange(4).sum())"],
        image=IMAGE,
        memory="512M",
        time=10,
    )
    assert ran.status == "OK", (ran.message, ran.stderr)
    assert ran.stdout == "6\n"

    from worker.request import JudgeRequest

    source = "import numpy as np\nprint(int(np.array(input().split(), dtype=int).sum()))\n"
    tests = [{"input": "1 2 3\n", "output": "6\n"}, {"input": "40 2\n", "output": "42\n"}]
    judged = JudgeRequest.parse({"language": "python3-sci", "source": source, "tests": tests})
    assert judged.language.image == IMAGE
    result = judged.judge()
    assert result.verdict == "AC", result.to_dict()
