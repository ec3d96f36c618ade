"""An image's `User` (sandbox/imageuser.py): numbers, or names looked up in the
image's own /etc/passwd and /etc/group (as its merged root shows them, never
through a symlink), run as those cell ids where the cell maps them; root
never (the cell's unprivileged ids instead); what cannot be said a clear
SpecError. Cells as root (warm and cold) and as the suite's unprivileged
users, with subordinate ids (a range: any id) and without (cell root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from image_support import BASE, BUSYBOX, Entry, cli, make_layout, ok

from sandbox import SpecError
from sandbox.imagestore import LayerStore
from sandbox.imageuser import ImageUser, parse_user
from sandbox.pull import pull

PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:2345::/home/app:/bin/sh\n"
GROUP = b"root:x:0:\napp:x:2345:\nstaff:x:3456:app\n"
USERS = [Entry("etc/"), Entry("etc/passwd", PASSWD), Entry("etc/group", GROUP)]
# What the program says of itself, and of a file it writes in /box.
WHO = "id -u; id -g; echo x > /box/f; stat -c %u:%g /box/f /box"


@pytest.fixture(autouse=True)
def _tools() -> None:
    if not shutil.which("skopeo") or not BUSYBOX.exists():
        pytest.fail("needs skopeo and busybox-static: run scripts/install")


@pytest.fixture
def work(layer_fs: Path) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="cellblock-imguser-", dir=layer_fs))
    path.chmod(0o755)
    yield path
    subprocess.run(["chmod", "-R", "u+rwX", str(path)], check=False)
    shutil.rmtree(path, ignore_errors=True)


def layers_of(work: Path, layers: list[list[Entry]]) -> tuple[str, ...]:
    """The stored layer directories (top first) of an image made of `layers`."""
    name = f"u{uuid.uuid4().hex[:8]}"
    layout = make_layout(work / name, name, layers, {})
    store = LayerStore(work / "store")
    image = pull(layout.oci(), store=store)
    return tuple(store.layer_dir(d) for d in reversed(image.layers))


def test_names_and_numbers(work: Path) -> None:
    layers = layers_of(work, [BASE, USERS])
    assert parse_user("app", layers) == ImageUser(1234, 2345)  # its primary group
    assert parse_user("app:staff", layers) == ImageUser(1234, 3456)
    assert parse_user("1234", layers) == ImageUser(1234, 2345)  # the uid's entry's group
    assert parse_user("1234:77", layers) == ImageUser(1234, 77)
    assert parse_user("4321", layers) == ImageUser(4321, None)  # no entry: the cell's group
    assert parse_user("app:0", layers) == ImageUser(1234, None)
    # Root, by number or by name: never granted (the cell's own program ids).
    for root in ("root", "0", "0:0", "root:root"):
        assert parse_user(root, layers) == ImageUser(None, None), root
    with pytest.raises(SpecError, match="no user 'nobody' in the image's /etc/passwd"):
        parse_user("nobody", layers)
    with pytest.raises(SpecError, match="no group 'wheel' in the image's /etc/group"):
        parse_user("app:wheel", layers)
    with pytest.raises(SpecError, match="uid 70000 is above 65535"):
        parse_user("70000", layers)
    with pytest.raises(SpecError, match="is not USER"):
        parse_user("app:", layers)


def test_the_merged_view_decides(work: Path) -> None:
    """The top-most layer that has the file wins; a whiteout, or /etc made
    opaque without it, hides the layers below."""
    changed = [Entry("etc/"), Entry("etc/passwd", b"app:x:2222:2222::/:/bin/sh\n")]
    assert parse_user("app", layers_of(work, [BASE, USERS, changed])) == ImageUser(2222, 2222)
    deleted = [Entry("etc/"), Entry("etc/.wh.passwd", b"")]
    with pytest.raises(SpecError, match="no user 'app'"):
        parse_user("app", layers_of(work, [BASE, USERS, deleted]))
    opaque = [Entry("etc/"), Entry("etc/.wh..wh..opq", b""), Entry("etc/hostname", b"x\n")]
    with pytest.raises(SpecError, match="no user 'app'"):
        parse_user("app", layers_of(work, [BASE, USERS, opaque]))
    # No /etc/passwd at all: names cannot be looked up; numbers need none.
    bare = layers_of(work, [BASE])
    with pytest.raises(SpecError, match="no user 'app'"):
        parse_user("app", bare)
    assert parse_user("1234:1234", bare) == ImageUser(1234, 1234)


def test_a_symlink_is_never_followed_out_of_the_image(work: Path) -> None:
    """An image whose /etc/passwd points at the host's: refused, not read
    (`daemon` is in every Debian's /etc/passwd, never in this image)."""
    assert b"daemon:" in Path("/etc/passwd").read_bytes()
    for link in ([Entry("etc/"), Entry("etc/passwd", link="/etc/passwd")],
                 [Entry("etc/"), Entry("etc/passwd", link="../../../../../../etc/passwd")],
                 [Entry("etc", link="/etc")]):  # fmt: skip
        layers = layers_of(work, [BASE, link])
        with pytest.raises(SpecError, match="is a symlink"):
            parse_user("daemon", layers)


def pulled(cell, work: Path, user: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An image of busybox and USERS whose config's User is `user`, pulled
    into the store the runner's cells use; its name."""
    tag = uuid.uuid4().hex[:8]
    name = f"cellblock-test/user-{tag}:1"
    layout = make_layout(
        work / f"user-{tag}", "u", [BASE, USERS], {"Env": ["PATH=/bin"], "User": user}
    )
    store = work / "store"
    if not store.exists():
        store.mkdir(0o700)
        if cell.user is not None:  # a store of the user's own (the test users have no home)
            os.chown(store, cell.user.pw_uid, cell.user.pw_gid)
    monkeypatch.setenv("CELLBLOCK_STORE", str(store))  # the in-process runs'; runuser passes it on
    login = None if cell.user is None else cell.user.pw_name
    ok(cli("pull", "--name", name, layout.oci(), user=login, env={"CELLBLOCK_STORE": str(store)}))
    return name


def refused(cell, argv: list[str], image: str) -> str:
    """The error a run that cannot start gives: SpecError in-process, the CLI's message."""
    with pytest.raises((SpecError, AssertionError)) as caught:
        cell.run(argv, image=image)
    return str(caught.value)


def test_a_numeric_user_runs_the_program(cell, work: Path, monkeypatch) -> None:
    image = pulled(cell, work, "1234", monkeypatch)
    if cell.mode == "user-shared":  # a size-1 map: cell root is the only id
        message = refused(cell, ["sh", "-c", WHO], image)
        assert "User '1234': this cell maps no uid but 0" in message, message
        assert "cellblock setup --user" in message
        return
    result = cell.run(["sh", "-c", WHO], image=image)
    assert result.status == "OK", (result.message, result.stderr)
    # Its group from the image's /etc/passwd; /box and what it writes are its own.
    assert result.stdout == "1234\n2345\n1234:2345\n1234:2345\n", result.stderr


def test_a_named_user_and_group(cell, work: Path, monkeypatch) -> None:
    image = pulled(cell, work, "app:staff", monkeypatch)
    if cell.mode == "user-shared":
        assert "this cell maps no uid but 0" in refused(cell, ["id"], image)
        return
    result = cell.run(["sh", "-c", WHO], image=image)
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout == "1234\n3456\n1234:3456\n1234:3456\n", result.stderr


def test_root_in_the_image_is_the_cells_unprivileged_user(cell, work: Path, monkeypatch) -> None:
    """`User: root` runs as the ids an image without User gets: never cell root
    (the init's), so never the owner of the cell's own mounts."""
    image = pulled(cell, work, "root", monkeypatch)
    plain = pulled(cell, work, "", monkeypatch)
    result = cell.run(["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"], image=image)
    control = cell.run(["sh", "-c", "id -u; id -g; grep CapEff /proc/self/status"], image=plain)
    assert result.status == "OK", (result.message, result.stderr)
    assert result.stdout == control.stdout
    expected = "0" if cell.mode == "user-shared" else "1000"
    assert result.stdout.splitlines()[:2] == [expected, expected]
    assert result.stdout.splitlines()[2].split()[1] == "0000000000000000"


def test_a_user_the_image_does_not_have_is_a_clear_error(cell, work: Path, monkeypatch) -> None:
    image = pulled(cell, work, "nobody-here", monkeypatch)
    message = refused(cell, ["true"], image)
    assert "no user 'nobody-here' in the image's /etc/passwd" in message, message
    image = pulled(cell, work, "99999", monkeypatch)
    assert "uid 99999 is above 65535" in refused(cell, ["true"], image)


def test_a_workers_warm_and_recycled_cells_run_as_the_user(test_user, work: Path) -> None:
    """A worker's way (sandbox.for_many_runs: the cell maker in its holding
    namespace, warm and recycled cells) as a user with subordinate ids: the
    image's uid is that cell's one subordinate id, run after run."""
    from conftest import python_as

    store = work / "store"
    store.mkdir(0o700)
    os.chown(store, test_user.pw_uid, test_user.pw_gid)
    layout = make_layout(work / "warm", "u", [BASE, USERS], {"Env": ["PATH=/bin"], "User": "app"})
    env = {"CELLBLOCK_STORE": str(store)}
    ok(cli("pull", "--name", "warm:1", layout.oci(), user=test_user.pw_name, env=env))
    script = (
        f"import os; os.environ['CELLBLOCK_STORE'] = {str(store)!r}\n"
        "import sandbox\n"
        "sandbox.for_many_runs()\n"
        "for _ in range(3):\n"
        f"    result = sandbox.run(['sh', '-c', {WHO!r}], image='warm:1')\n"
        "    print(result.status, repr(result.stdout), result.message)\n"
    )
    done = subprocess.run(
        python_as(test_user.pw_name, script), capture_output=True, text=True, cwd="/", check=False
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 3 and all(
        line.startswith("OK '1234\\n2345\\n1234:2345\\n1234:2345\\n'") for line in lines
    ), done.stdout
