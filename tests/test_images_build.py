"""scripts/build-images, for real: the Python image with numpy, pandas and
pytest built from Debian's packages (mmdebstrap, umoci, skopeo; about a
minute, from the Debian mirror), pulled from its OCI archive, and a
submission that imports numpy judged in it through the shipped language file
(profiles/languages/python3-sci.toml); and the judge's image (gcc, g++, the JDK,
Go, Rust, Node, Python: a few minutes), in which A+B is judged in every one of
those languages with the image's own toolchains."""

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


def build_image(name: str, timeout: float) -> Iterator[Path]:
    """scripts/build-images NAME into a temp dir (its archive under out/), removed after."""
    needs_root("mmdebstrap --mode=unshare as root (a user needs subordinate ids)")
    work = Path(tempfile.mkdtemp(prefix=f"cellblock-build-{name}-"))
    work.chmod(0o755)
    try:
        subprocess.run(
            [str(REPO / "scripts" / "build-images"), "--out", str(work / "out"), name],
            check=True,
            timeout=timeout,
        )
        yield work
    finally:
        subprocess.run(["chmod", "-R", "u+rwX", str(work)], check=False)
        shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def built() -> Iterator[Path]:
    yield from build_image("python-sci", 900)


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


JUDGE_IMAGE = "cellblock/judge:bookworm"  # profiles/images/judge.toml's name:tag
# A+B in every language the judge image pins (profiles/images/judge.toml's packages).
A_PLUS_B = {
    "c": '#include <stdio.h>\nint main(void){long a,b;scanf("%ld %ld",&a,&b);'
    'printf("%ld\\n",a+b);return 0;}\n',
    "cpp": "#include <iostream>\nint main(){long a,b;std::cin>>a>>b;std::cout<<a+b<<'\\n';}\n",
    "java": "import java.util.*;\npublic class Main { public static void main(String[] x)"
    " { Scanner s = new Scanner(System.in); System.out.println(s.nextLong() + s.nextLong()); } }",
    "go": 'package main\nimport "fmt"\nfunc main(){var a, b int64; fmt.Scan(&a, &b);'
    " fmt.Println(a + b)}\n",
    "rust": "use std::io::Read;\nfn main(){ let mut s = String::new();"
    " std::io::stdin().read_to_string(&mut s).unwrap();"
    " let v: Vec<i64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();"
    ' println!("{}", v[0] + v[1]); }\n',
    "javascript": 'const [a, b] = require("fs").readFileSync(0, "utf8").trim().split(/\\s+/)'
    ".map(Number);\nconsole.log(a + b);\n",
    "python3": "a, b = map(int, input().split())\nprint(a + b)\n",
}


@pytest.fixture(scope="module")
def judge_image() -> Iterator[Path]:
    yield from build_image("judge", 1800)


def test_the_judge_image_pins_every_toolchain(
    judge_image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The judge's toolchains from the image, not the host: each language's own compile
    and run commands, with the request's `image` (an operator's batch may name any)."""
    archive = judge_image / "out" / "cellblock-judge.oci.tar"
    monkeypatch.setenv("CELLBLOCK_STORE", str(judge_image / "store"))
    ok(cli("pull", f"oci-archive:{archive}:{JUDGE_IMAGE}"))
    packages = json.loads(ok(cli("inspect", JUDGE_IMAGE)))["config"]["labels"][
        "org.cellblock.packages"
    ]
    assert "gcc=" in packages and "default-jdk-headless=" in packages, packages

    from worker.request import JudgeRequest

    tests = [{"input": "1 2\n", "output": "3\n"}, {"input": "40 2\n", "output": "42\n"}]
    for language, source in A_PLUS_B.items():
        request = {"language": language, "source": source, "tests": tests, "image": JUDGE_IMAGE}
        judged = JudgeRequest.parse(request, host_paths=True)
        assert judged.language.image == JUDGE_IMAGE
        result = judged.judge()
        assert result.verdict == "AC", (language, result.to_dict())

    # The compiler is the image's: gcc's version line from the image, run in a cell of it.
    ran = sandbox.run(["gcc", "--version"], image=JUDGE_IMAGE, time=10)
    assert ran.status == "OK" and "(Debian 12." in ran.stdout, (ran.message, ran.stdout)
