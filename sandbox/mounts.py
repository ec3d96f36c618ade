"""The mount namespace: a fresh root for the cell, then pivot_root into it.

Runs in the cell's init (PID 1 of the new PID namespace, root of the new user
namespace) before anything untrusted starts. In order:

1. make every mount private, so nothing propagates to or from the host;
2. a per-run tmpfs (size and inode capped, nosuid, nodev) holds the overlay's
   upper and work dirs: writes land here and die with the cell;
3. the root is an overlay: lower = skeleton (mount points, made once per
   cell by `hold`) + image layers (read-only),
   upper = the tmpfs, with `userxattr` (required for unprivileged overlay);
4. host directories of the image appear through read-only overlays of their
   own (the host directory below a small "mask" layer), made once per cell in
   the init's first mount namespace (`hold`) and bound into each of its roots:
   the program's files are overlay inodes of its cell, never the host's, so a
   lock it takes on /etc/passwd, or a watch it sets on /etc/hostname, reaches
   no process outside its cell; the mask layer hides what the program may not
   see (images.private_entries). A host directory with mounts beneath it cannot
   be an overlay's layer in a user namespace (the kernel refuses to reveal
   what they cover): it is bound read-only instead (recursive, nosuid, nodev),
   and the run's `degraded` says so;
5. a minimal read-only /dev (null zero full random urandom) with a fresh shm,
   and a /proc of the cell's PID namespace with the writable corners covered:
   both made once per cell (`hold`) and bound, the shm mounted for each root;
6. pivot_root and detach the old root: the host's tree is unreachable.

After copy-in, `bind_read_only` covers chosen /box files with read-only binds
of themselves (a judged program's own executable, say).

No host directory is created or left behind: the staging tmpfs is mounted
over /tmp inside the private namespace and vanishes with it.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

from . import libc
from .images import MOUNT_POINTS, Image
from .userns import limit_cell_namespace

STAGING = "/tmp"
# Where the init's first mount namespace holds the image's layers and the host
# directories' read-only views (hold); in each root's namespace the staging
# tmpfs covers it, once they are open. Layers are held at LAYER_HOLD/<index>,
# host directories at HOST_HOLD/<dir> with their masks at MASK_HOLD/<dir>.
LAYER_HOLD = "/tmp"
HOST_HOLD = f"{LAYER_HOLD}/host"
MASK_HOLD = f"{LAYER_HOLD}/mask"
# The skeleton (the root's first lower layer), /dev without its shm, and the
# cell's /proc, made once per cell (hold) and bound into each of its roots:
# nothing of them can be written by a program (a lower layer; a read-only
# tmpfs of binds; a procfs with its writable corners covered).
SKELETON_HOLD = f"{LAYER_HOLD}/skel"
DEV_HOLD = f"{LAYER_HOLD}/dev"
PROC_HOLD = f"{LAYER_HOLD}/proc"
DEVICES = ("null", "zero", "full", "random", "urandom")
DEV_SYMLINKS = (
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
)
# procfs entries a cell never needs to write (bubblewrap's --proc covers the same).
PROC_COVERED = ("sys", "sysrq-trigger", "irq", "bus")
READ_ONLY = libc.MOUNT_ATTR_RDONLY | libc.MOUNT_ATTR_NOSUID | libc.MOUNT_ATTR_NODEV


@dataclass(frozen=True)
class RootPlan:
    image: Image
    tmpfs_size: int
    tmpfs_inodes: int
    box_uid: int
    box_gid: int
    # (host dir, entries beneath it) the program may not see: where it runs as
    # the caller's own host uid, what only the caller may read (images.py).
    hidden: tuple[tuple[str, tuple[str, ...]], ...] = ()


def open_layers(image: Image) -> tuple[int, ...]:
    """Open the image's layer directories (O_PATH, in the order of
    `image.layers`): in the cell's first mount namespace, before the init takes
    the cell's ids, so with the rights of the caller that makes the cell.

    Why then: the layer store is a directory only its owner may enter (a
    layer may hold a root-owned setuid file: no other host user may reach it),
    and the init, once it is the cell's root, is not its owner."""
    opened: list[int] = []
    try:
        for path in image.layers:
            opened.append(os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC))
    except BaseException:
        for fd in opened:
            os.close(fd)
        raise
    return tuple(opened)


def hold(plan: RootPlan, layers: tuple[int, ...]) -> int:
    """In the init's first mount namespace (the one every root of its life is
    copied from), on a tmpfs of ours at LAYER_HOLD:

    - each layer opened by open_layers, bound at LAYER_HOLD/<i> (and the
      descriptors closed). In every copy of this namespace the layers are then
      mounts reached by path without passing through the store (an overlay
      takes only lower dirs of the mount namespace it is made in, so a
      descriptor from another namespace would not do), and a layer is the root
      of its mount: no submounts beneath it.
    - each host directory's read-only view (an overlay of it below a mask that
      hides what the program may not see), at HOST_HOLD/<dir>. Every root of
      the cell binds this one overlay instead of mounting its own, so the
      names a program looked up stay looked up for the next run of a recycled
      cell: through a new overlay, a Python program's start-up lookups cost
      it 1-2 ms of CPU (bench/README.md). Nothing of it can be written (no
      upper layer, read-only); what a run leaves in it is the kernel's cache
      of names, as the host's own page cache is shared by every process.
      That cache keeps a file the host replaces as it was, so a recycled
      cell lives warm.RECYCLED_LIFETIME. A host directory with mounts
      beneath it cannot be an overlay lower dir: it is not held, and each
      root binds it (build_root).
    - the skeleton, at SKELETON_HOLD, /dev but its shm, at DEV_HOLD, and the
      cell's procfs, at PROC_HOLD: each the same for every root of the cell
      (a recycled cell keeps its PID namespace, which is what its procfs
      shows). Made here once, they are only bound at a recycled cell's
      renewal; made for each root, they cost 0.1, 0.2 and 0.1 ms of its
      ~1 ms (bench/README.md).

    Returns a descriptor of the cell's ns_last_pid, open for writing: the
    procfs' /proc/sys is covered read-only, and each root sets it (build_root)."""
    libc.mount("cellblock-hold", LAYER_HOLD, "tmpfs", libc.MS_NOSUID | libc.MS_NODEV, "mode=0755")
    os.mkdir(SKELETON_HOLD, 0o755)
    _make_skeleton(SKELETON_HOLD, plan)
    os.mkdir(DEV_HOLD, 0o755)
    _make_dev(DEV_HOLD)
    os.mkdir(PROC_HOLD, 0o755)
    last_pid = _make_proc(PROC_HOLD)
    for index, fd in enumerate(layers):
        target = f"{LAYER_HOLD}/{index}"
        os.mkdir(target, 0o755)
        libc.mount(_fd_path(fd), target, None, libc.MS_BIND)
        libc.mount_setattr(target, READ_ONLY, recursive=False)
        os.close(fd)
    hidden = dict(plan.hidden)
    for host_dir in plan.image.host_dirs:
        target = HOST_HOLD + host_dir
        _make_dirs(target)
        source = os.open(host_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            if not _overlay_host_dir(
                source, target, MASK_HOLD + host_dir, hidden.get(host_dir, ())
            ):
                os.rmdir(target)
        finally:
            os.close(source)
    return last_pid


def build_root(plan: RootPlan, last_pid: int) -> list[str]:
    """Build the cell's root and pivot into it; afterwards cwd is /box. Returns
    the host directories that had to be bound (their inodes are the host's).
    `last_pid`: the cell's ns_last_pid, as hold returned it."""
    # Pin the skeleton, /dev, /proc, the image's layers and the host
    # directories' views (held by hold) by fd before the staging tmpfs can hide
    # them; a host directory that is not held (mounts beneath it) is pinned
    # itself, to be bound.
    skeleton, dev, proc = (
        os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for path in (SKELETON_HOLD, DEV_HOLD, PROC_HOLD)
    )
    layers = [
        os.open(f"{LAYER_HOLD}/{index}", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        for index in range(len(plan.image.layers))
    ]
    held: dict[str, int] = {}
    sources: dict[str, int] = {}
    for path in plan.image.host_dirs:
        try:
            held[path] = os.open(HOST_HOLD + path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            sources[path] = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    libc.mount(None, "/", None, libc.MS_REC | libc.MS_PRIVATE)
    libc.mount(
        "cellblock",
        STAGING,
        "tmpfs",
        libc.MS_NOSUID | libc.MS_NODEV,
        f"size={plan.tmpfs_size},nr_inodes={plan.tmpfs_inodes},mode=0755",
    )
    upper, work, root = (f"{STAGING}/{d}" for d in ("upper", "work", "root"))
    for directory in (upper, work, root):
        os.mkdir(directory, 0o755)

    lowers = [_fd_path(fd) for fd in (skeleton, *layers)]
    libc.mount(
        "cellblock-root",
        root,
        "overlay",
        libc.MS_NOSUID | libc.MS_NODEV,
        f"lowerdir={':'.join(lowers)},upperdir={upper},workdir={work},userxattr",
    )
    for host_dir, view in held.items():
        libc.mount(_fd_path(view), root + host_dir, None, libc.MS_BIND)
        libc.mount_setattr(root + host_dir, READ_ONLY, recursive=False)
    hidden = dict(plan.hidden)
    for host_dir, source in sources.items():
        _bind_host_dir(
            source, root + host_dir, f"{STAGING}/mask{host_dir}", hidden.get(host_dir, ())
        )

    # /box is a mount point of its own: the program (cell root in a size-1 map
    # owns /) cannot remove, rename or replace it (EBUSY) before copy-out.
    libc.mount(f"{root}/box", f"{root}/box", None, libc.MS_BIND)
    # The held /dev with its device binds: a bind keeps each mount's flags
    # (read-only, nosuid, noexec). Its shm is fresh for every root.
    libc.mount(_fd_path(dev), f"{root}/dev", None, libc.MS_BIND | libc.MS_REC)
    libc.mount(_fd_path(proc), f"{root}/proc", None, libc.MS_BIND | libc.MS_REC)
    for fd in [skeleton, dev, proc, *layers, *held.values(), *sources.values()]:
        os.close(fd)
    _mount_shm(f"{root}/dev/shm", plan.tmpfs_size)
    # The PID counter starts again: a recycled cell's next program gets the
    # pids the last one got, so it cannot learn how many processes ran before.
    os.pwrite(last_pid, b"1", 0)
    _pivot_into(root)
    return list(sources)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _overlay_host_dir(source: int, target: str, mask: str, hidden: tuple[str, ...]) -> bool:
    """The host directory pinned at fd `source`, read-only at `target`: an
    overlay of it below `mask` (made here, with a whiteout for each entry to
    hide). False if it cannot be one (mounts beneath it): see _bind_host_dir."""
    _make_dirs(mask)
    for relative in hidden:
        _make_dirs(os.path.dirname(f"{mask}/{relative}"))
        # A whiteout: the char device 0/0, which any user namespace may make.
        os.mknod(f"{mask}/{relative}", stat.S_IFCHR | 0o000, 0)
    try:
        libc.mount(
            "cellblock-host",
            target,
            "overlay",
            libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV,
            f"lowerdir={mask}:{_fd_path(source)},userxattr",
        )
        return True
    except OSError as error:
        if error.errno != errno.EINVAL:
            raise
    return False


def _bind_host_dir(source: int, target: str, mask: str, hidden: tuple[str, ...]) -> None:
    """The host directory pinned at fd `source` (one with mounts beneath it),
    read-only at `target` by a recursive bind; the entries to hide are covered
    by empty read-only binds (made beneath `mask`)."""
    _make_dirs(mask)
    libc.mount(_fd_path(source), target, None, libc.MS_BIND | libc.MS_REC)
    libc.mount_setattr(target, READ_ONLY, recursive=True)
    for relative in hidden:
        _cover(target, relative, mask)


def _cover(top: str, relative: str, scratch: str) -> None:
    """Cover `top`/`relative` (a host file or directory, no symlink on the way:
    private_entries lists none) with an empty one of mode 0, bound read-only."""
    top_fd = os.open(top, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        where = libc.openat2(
            top_fd, relative, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, _BENEATH_XDEV
        )
    finally:
        os.close(top_fd)
    try:
        directory = stat.S_ISDIR(os.fstat(where).st_mode)
        empty = f"{scratch}/.cover-{'dir' if directory else 'file'}"
        if not os.path.lexists(empty):
            if directory:
                os.mkdir(empty, 0)
            else:
                os.close(os.open(empty, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0))
            os.chmod(empty, 0)
        libc.mount(empty, _fd_path(where), None, libc.MS_BIND)
        # By path: the fd still names what is now covered. Nothing of the cell
        # has run yet, and the walk above found no symlink on the way.
        libc.mount(
            None,
            f"{top}/{relative}",
            None,
            libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV,
        )
    finally:
        os.close(where)


def _make_dirs(path: str) -> None:
    """Like `mkdir -p -m 0755`, whatever umask the caller left us: the mask's
    directories are the merged ones' attributes in the cell."""
    if not os.path.isdir(path):
        _make_dirs(os.path.dirname(path))
        os.mkdir(path)
        os.chmod(path, 0o755)


def _make_skeleton(skeleton: str, plan: RootPlan) -> None:
    for name in MOUNT_POINTS:
        os.mkdir(f"{skeleton}/{name}", 0o755)
    os.chown(f"{skeleton}/box", plan.box_uid, plan.box_gid)
    os.chmod(f"{skeleton}/tmp", 0o1777)
    for host_dir in plan.image.host_dirs:
        os.makedirs(skeleton + host_dir, 0o755, exist_ok=True)
    for name, target in plan.image.symlinks:
        os.symlink(target, f"{skeleton}/{name}")


def _make_dev(dev: str) -> None:
    """A minimal /dev at `dev`, read-only: the host's harmless devices bound,
    the usual symlinks, and an empty shm directory (_mount_shm)."""
    libc.mount(
        "cellblock-dev",
        dev,
        "tmpfs",
        libc.MS_NOSUID | libc.MS_NOEXEC,
        "size=64k,nr_inodes=64,mode=0755",
    )
    for name in DEVICES:
        node = f"{dev}/{name}"
        os.close(os.open(node, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o666))
        libc.mount(f"/dev/{name}", node, None, libc.MS_BIND)
    for name, target in DEV_SYMLINKS:
        os.symlink(target, f"{dev}/{name}")
    os.mkdir(f"{dev}/shm")
    libc.mount_setattr(dev, libc.MOUNT_ATTR_RDONLY, recursive=False)


def _mount_shm(shm: str, size: int) -> None:
    # A fresh shm per root: a shared one is a side channel between runs (isolate 2.6).
    libc.mount(
        "cellblock-shm",
        shm,
        "tmpfs",
        libc.MS_NOSUID | libc.MS_NODEV,
        f"size={size},nr_inodes=1024,mode=1777",
    )


def _make_proc(proc: str) -> int:
    """A procfs of the cell's PID namespace at `proc`, its writable corners
    covered read-only. Returns its ns_last_pid, open for writing."""
    # The kernel lets a user namespace mount procfs only while a fully visible
    # procfs is in its mount namespace (the host's /proc here).
    libc.mount(
        "proc", proc, "proc", libc.MS_NOSUID | libc.MS_NODEV | libc.MS_NOEXEC, "hidepid=invisible"
    )
    # While /proc/sys is still writable for us. Once per cell: the limits are
    # its user namespace's, which a recycled cell keeps.
    limit_cell_namespace(proc)
    last_pid = os.open(f"{proc}/sys/kernel/ns_last_pid", os.O_WRONLY | os.O_CLOEXEC)
    for name in PROC_COVERED:
        path = f"{proc}/{name}"
        if os.path.exists(path):
            libc.mount(path, path, None, libc.MS_BIND | libc.MS_REC)
            libc.mount_setattr(path, READ_ONLY | libc.MOUNT_ATTR_NOEXEC, recursive=True)
    return last_pid


def _pivot_into(root: str) -> None:
    # pivot_root(".", ".") stacks the old root on top of the new one; detaching
    # "." then removes it (the runc/bubblewrap idiom, no put_old dir needed).
    os.chdir(root)
    libc.pivot_root(".", ".")
    libc.umount2(".", libc.MNT_DETACH)
    os.chdir("/box")
    if os.getcwd() != "/box":  # SECURITY.md rule 5: verify where we are after chdir
        raise OSError("the cell's working directory is not /box after pivot_root")


# Resolution of a /box file from the init's /box fd: nothing but plain names below it.
_BENEATH = (
    libc.RESOLVE_BENEATH
    | libc.RESOLVE_NO_SYMLINKS
    | libc.RESOLVE_NO_MAGICLINKS
    | libc.RESOLVE_NO_XDEV
)
# The same, but into a mount on the way (to look at a bind mount just made).
_BENEATH_XDEV = _BENEATH & ~libc.RESOLVE_NO_XDEV


def bind_read_only(box: int, relative: str) -> None:
    """In the init, after copy-in and before the program: cover /box/`relative`
    with a read-only, nosuid, nodev bind mount of itself.

    The program owns the file (cell root in a size-1 map, or the run uid), so
    permissions cannot keep it from writing or chmod-ing it; a read-only mount
    can (EROFS), and a mount point cannot be renamed over or removed (EBUSY).
    The program has no capabilities and seccomp kills the mount calls, so the
    bind stays. Every step works on fds: the file is opened once beneath /box,
    cloned as a detached mount, made read-only, and moved onto that same file.
    """
    target = libc.openat2(box, relative, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, _BENEATH)
    try:
        if not stat.S_ISREG(os.fstat(target).st_mode):
            raise OSError(f"read-only {relative}: not a regular file")
        try:
            tree = libc.open_tree(
                target, "", libc.OPEN_TREE_CLONE | libc.OPEN_TREE_CLOEXEC | libc.AT_EMPTY_PATH
            )
        except OSError as error:
            if error.errno not in (errno.EPERM, errno.ENOSYS):
                raise
            _bind_read_only_by_path(box, relative)
            return
        try:
            libc.mount_setattr("", READ_ONLY, recursive=False, dirfd=tree)
            libc.move_mount(
                tree, "", target, "", libc.MOVE_MOUNT_F_EMPTY_PATH | libc.MOVE_MOUNT_T_EMPTY_PATH
            )
        finally:
            os.close(tree)
    finally:
        os.close(target)


def _bind_read_only_by_path(box: int, relative: str) -> None:
    """The same with mount(2), where a seccomp profile refuses the new mount API
    (cellblock's Docker worker profile, by design). By path, which is safe only
    because nothing but the init has run in this cell yet: everything under
    /box is what the init just wrote (plain directories and files, no links).
    The result is checked through a fresh fd."""
    path = f"/box/{relative}"
    libc.mount(path, path, None, libc.MS_BIND)
    libc.mount(
        None,
        path,
        None,
        libc.MS_REMOUNT | libc.MS_BIND | libc.MS_RDONLY | libc.MS_NOSUID | libc.MS_NODEV,
    )
    check = libc.openat2(box, relative, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, _BENEATH_XDEV)
    try:
        if not os.fstatvfs(check).f_flag & os.ST_RDONLY:
            raise OSError(f"read-only {relative}: the bind mount is not read-only")
    finally:
        os.close(check)
