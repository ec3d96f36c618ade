"""cellblock workers as Slurm jobs: Debian's slurmctld, slurmd and munged, run here.

A one-node Slurm cluster of its own (a temp dir holds its configuration, state,
spool, munge key and socket; free ports), the API and Redis as `cellblock serve`
runs them on a login node, and workers started by
`sbatch deploy/slurm/cellblock-worker.sbatch` as the unprivileged test user.
Checked: the verdicts come from workers that are processes of the Slurm job;
a memory hog is MLE (the cells have their cgroup inside the job: cellblock
setup's subtree, while the job's freezer and cpuset keep them); a stopped
job's worker finishes the running submission and exits; a job stopped with
no grace loses no submission (it is judged again by the worker of the next
job); the time-limit signal stops the worker and requeues the job; the API
runs as a job too.

Two configurations of Slurm's process tracking: `cgroup` (proctrack/cgroup
and task/cgroup with ConstrainRAMSpace and ConstrainCores: what clusters
run; cgroup v1 only here) and `linuxproc` (no Slurm cgroups at all).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import VENV, _user_can_read_repo
from service_support import (
    FAST_TIMING,
    REPO,
    ApiServer,
    RedisServer,
    free_port,
    remove,
    scratch,
    wait_for,
)

from api.app import create_app
from api.settings import Settings
from sandbox.cgroups import is_v2_host
from sandbox.cgroups.delegate import delegated_path
from worker.store import Store, Timing

SBATCH = REPO / "deploy" / "slurm" / "cellblock-worker.sbatch"
CGROUP_ROOT = Path("/sys/fs/cgroup")
TIMING = Timing(lease=4, renew=1, reap=1, limbo=4)
KEY = "slurm-test-key"
HEADERS = {"Authorization": f"Bearer {KEY}"}
KILL_WAIT = 30  # Slurm's SIGTERM-to-SIGKILL delay; the script's default grace is less

A_PLUS_B = "a, b = map(int, input().split())\nprint(a + b)\n"
TESTS = [{"input": "1 2\n", "output": "3\n"}, {"input": "40 2\n", "output": "42\n"}]
MEMORY_HOG = {
    "language": "c",
    "limits": {"memory": "32M"},
    "tests": TESTS[:1],
    "source": "#include <stdlib.h>\n#include <string.h>\n"
    "int main(void){for(;;){char*p=malloc(1<<20);if(!p)return 3;memset(p,1,1<<20);}}",
}


def slow(tests: int) -> dict:
    """A submission that takes about `tests` seconds."""
    return {
        "language": "python3",
        "limits": {"time": 2, "wall_time": 6},
        "source": "import time\ntime.sleep(1.0)\nprint(sum(map(int, input().split())))",
        "tests": [{"input": f"{i} 1\n", "output": f"{i + 1}\n"} for i in range(tests)],
    }


def pids_named(name: str) -> set[int]:
    found = set()
    for entry in os.listdir("/proc"):
        with contextlib.suppress(OSError):
            if entry.isdigit() and Path(f"/proc/{entry}/comm").read_text().strip() == name:
                found.add(int(entry))
    return found


def cgroup_dirs() -> set[Path]:
    """Every directory one level down in each cgroup hierarchy (where Slurm makes its own)."""
    found: set[Path] = set()
    for hierarchy in CGROUP_ROOT.iterdir():
        with contextlib.suppress(OSError):
            found.update(p for p in hierarchy.iterdir() if p.is_dir())
    return found


def remove_cgroup_tree(path: Path) -> None:
    for child in path.iterdir():
        if child.is_dir():
            remove_cgroup_tree(child)
    with contextlib.suppress(OSError):
        path.rmdir()


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(
        item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item
    )


def uid_of(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])


class Slurm:
    """munged, slurmctld and slurmd (all in the foreground, as root) for one node: this one."""

    def __init__(self, directory: Path, tracking: str, user: pwd.struct_passwd) -> None:
        self.dir = directory
        self.tracking = tracking
        self.user = user
        self.node = socket.gethostname().split(".")[0]
        self.conf = directory / "slurm.conf"
        self.processes: list[subprocess.Popen] = []
        self.stepds_before = pids_named("slurmstepd")
        self.cgroups_before = cgroup_dirs()

    @property
    def env(self) -> dict[str, str]:
        return {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "SLURM_CONF": str(self.conf)}

    def start(self) -> Slurm:
        key_dir = self.dir / "munge-key"  # private: munged refuses a key others can read
        run_dir = self.dir / "munge"  # the socket: every user's sbatch talks to it
        for path, mode in (
            (key_dir, 0o700),
            (run_dir, 0o755),
            (self.dir / "state", 0o755),
            (self.dir / "spool", 0o755),
            (self.dir / "tmp", 0o1777),
            (self.dir / "log", 0o755),
        ):
            path.mkdir()
            path.chmod(mode)
        self.munge_socket = run_dir / "munge.socket"
        subprocess.run(["mungekey", "--create", f"--keyfile={key_dir / 'munge.key'}"], check=True)
        self._daemon(
            "munged",
            [
                "munged",
                "--foreground",
                f"--socket={self.munge_socket}",
                f"--key-file={key_dir / 'munge.key'}",
                f"--log-file={self.dir / 'log' / 'munged.log'}",
                f"--pid-file={key_dir / 'munged.pid'}",
                f"--seed-file={key_dir / 'munged.seed'}",
            ],
        )
        wait_for(self.munge_socket.exists, 10, "munged's socket")
        self._write_conf()
        self._daemon("slurmctld", ["slurmctld", "-D", "-i"])
        slurmd = ["slurmd", "-D", "-N", self.node]
        if is_v2_host():
            # No Slurm cgroup plugin here (linuxproc): jobs stay in slurmd's cgroup. v2
            # lets the user's worker place cells only inside its delegated subtree, so
            # slurmd starts there, as conftest.as_user starts the other tests' workers.
            # A harness for one user's jobs, not a way to run a cluster (README.md).
            procs = Path(delegated_path(self.user.pw_name)[0]) / "supervisor" / "cgroup.procs"
            slurmd = ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *slurmd]
        self._daemon("slurmd", slurmd)
        wait_for(lambda: self.node_state() == "idle", 60, f"node {self.node} idle")
        return self

    def _write_conf(self) -> None:
        cpus = os.cpu_count() or 1
        with open("/proc/meminfo") as meminfo:
            total_kb = int(next(line for line in meminfo if line.startswith("MemTotal")).split()[1])
        self.memory_mb = total_kb // 1024 // 2  # what jobs may ask for in all
        if self.tracking == "cgroup":
            plugins = ["ProctrackType=proctrack/cgroup", "TaskPlugin=task/cgroup,task/affinity"]
            (self.dir / "cgroup.conf").write_text(
                "CgroupPlugin=cgroup/v1\nConstrainCores=yes\nConstrainRAMSpace=yes\n"
            )
        else:
            plugins = ["ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none"]
        lines = [
            "ClusterName=cellblock-test",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={self.dir / 'state'}",
            f"SlurmdSpoolDir={self.dir / 'spool'}",
            f"SlurmctldPidFile={self.dir / 'slurmctld.pid'}",
            f"SlurmdPidFile={self.dir / 'slurmd.pid'}",
            f"SlurmctldLogFile={self.dir / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={self.dir / 'log' / 'slurmd.log'}",
            f"PlugStackConfig={self.dir / 'plugstack.conf'}",  # not /etc/slurm's
            f"TmpFS={self.dir / 'tmp'}",
            *plugins,
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            "ReturnToService=2",
            f"KillWait={KILL_WAIT}",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "MailProg=/bin/true",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={self.memory_mb} "
            "State=UNKNOWN",
            f"PartitionName=cells Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
        ]
        (self.dir / "plugstack.conf").write_text("")
        self.conf.write_text("\n".join(lines) + "\n")

    def _daemon(self, name: str, command: list[str]) -> None:
        with open(self.dir / "log" / f"{name}.out", "wb") as out:
            process = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        time.sleep(0.2)
        if process.poll() is not None:
            raise AssertionError(f"{name} exited at once: {self.log(name + '.out')}")

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / "log" / name).read_text(errors="replace")[-4000:]
        return ""

    def run(self, *command: str, user: str | None = None, env: dict[str, str] | None = None):
        full = ["env", "-i", *[f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]]
        full += list(command)
        if user:
            full = ["runuser", "-u", user, "--", *full]
        return subprocess.run(full, capture_output=True, text=True, check=False, cwd="/")

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()

    def job_state(self, job: str) -> str:
        """PENDING, RUNNING, COMPLETING, ...; "" once the job has ended."""
        listing = self.run("squeue", "-h", "-o", "%i %T").stdout.split("\n")
        return next((line.split()[1] for line in listing if line.split()[:1] == [job]), "")

    def jobs(self) -> list[str]:
        """The jobs not yet ended."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def stop(self) -> None:
        """Every job, then the daemons; nothing of theirs is left (processes, cgroups)."""
        try:
            if self.processes and self.processes[-1].poll() is None:
                with contextlib.suppress(AssertionError):
                    self.end_jobs()
            for pid in self.stepds():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        finally:
            for process in reversed(self.processes):
                if process.poll() is None:
                    process.terminate()
                try:
                    process.wait(20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            for path in cgroup_dirs() - self.cgroups_before:  # slurm_<node> in each hierarchy
                remove_cgroup_tree(path)

    def end_jobs(self) -> None:
        """Cancel every job; wait until they and their slurmstepd processes are gone."""
        for job in self.jobs():
            self.run("scancel", job)
        wait_for(lambda: not self.jobs(), KILL_WAIT + 30, "the jobs to end")
        # A job step would outlive slurmd.
        wait_for(lambda: not self.stepds(), KILL_WAIT + 30, "slurmstepd to exit")

    def stop_job(self, job: str) -> None:
        """Stop a job of ours the way deploy/slurm/README.md says for this tracking."""
        if self.tracking == "cgroup":  # SIGTERM goes to the batch script only
            command = ["scancel", job]
        else:  # plain scancel would SIGTERM every process of the job, the judged ones too
            command = ["scancel", "--batch", "--signal=TERM", job]
        done = self.run(*command)
        assert done.returncode == 0, done.stderr

    def stepds(self) -> set[int]:
        return pids_named("slurmstepd") - self.stepds_before

    def job_dir(self, name: str) -> Path:
        """A directory the test user owns, for one job's output."""
        path = self.dir / name
        path.mkdir()
        os.chown(path, self.user.pw_uid, self.user.pw_gid)
        return path

    def submit_worker(
        self, redis_url: str, cpus: int, *, grace: float | None = None, name: str = "job"
    ) -> tuple[str, Path]:
        """`sbatch deploy/slurm/cellblock-worker.sbatch` as the test user; (job id, its log)."""
        env = {"CELLBLOCK_REDIS_URL": redis_url}
        if grace is not None:
            env["CELLBLOCK_GRACE"] = str(grace)
        return self.submit(SBATCH, env, cpus, min(1500, self.memory_mb), name)

    def submit(
        self, sbatch: Path, env: dict[str, str], cpus: int, memory_mb: int, name: str
    ) -> tuple[str, Path]:
        """`sbatch SCRIPT` as the test user, with this checkout's cellblock; (job id, its log)."""
        workdir = self.job_dir(name)
        script = sbatch
        env = {**FAST_TIMING, **env}
        if _user_can_read_repo(self.user.pw_name):
            env["PYTHONPATH"] = str(REPO)
            env["CELLBLOCK_COMMAND"] = f"{VENV / 'bin' / 'python'} -m cellblock"
        else:  # a private checkout: the copy installed into the venv, the script copied
            env["CELLBLOCK_COMMAND"] = str(VENV / "bin" / "cellblock")
            script = workdir / sbatch.name
            shutil.copy(sbatch, script)
            script.chmod(0o644)
        done = self.run(
            "sbatch",
            "--parsable",
            f"--chdir={workdir}",
            f"--output={workdir}/job-%j.log",
            f"--cpus-per-task={cpus}",
            f"--mem={memory_mb}M",
            "--time=15",
            str(script),
            user=self.user.pw_name,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        job = done.stdout.strip().split(";")[0]
        return job, workdir / f"job-{job}.log"


@pytest.fixture(scope="module", params=["cgroup", "linuxproc"])
def slurm_cluster(request, test_user) -> Iterator[Slurm]:
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "mungekey"):
        if shutil.which(tool, path="/usr/sbin:/usr/bin") is None:
            pytest.fail(f"{tool} is missing: scripts/install installs Slurm and munge")
    if request.param == "cgroup" and is_v2_host():
        pytest.skip("Slurm's cgroup plugins are tested on cgroup v1 hosts (deploy/slurm/README.md)")
    directory = scratch("cb-slurm-")
    cluster = Slurm(directory, request.param, test_user)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        remove(directory)


@pytest.fixture
def slurm(slurm_cluster: Slurm) -> Iterator[Slurm]:
    """The cluster, with no job of a test left for the next one."""
    yield slurm_cluster
    slurm_cluster.end_jobs()


@pytest.fixture(scope="module")
def service() -> Iterator[tuple[Store, httpx.Client, RedisServer]]:
    """Redis and the API as `cellblock serve` runs them on a login node, without workers."""
    directory = scratch("cb-slurm-api-")
    server = RedisServer(directory).start()
    settings = Settings.from_env(
        redis_url=server.url, api_keys=frozenset({KEY}), rate_limit=0, wait_timeout=60.0
    )
    api = ApiServer(create_app(settings, TIMING)).start()
    client = httpx.Client(base_url=api.url, headers=HEADERS, timeout=90)
    try:
        yield Store.from_url(server.url, TIMING), client, server
    finally:
        client.close()
        api.stop()
        server.stop()
        remove(directory)


def workers_of(store: Store, job: str) -> list[dict]:
    """The live workers (their records in Redis) that are processes of Slurm job `job`."""
    found = []
    for record in store.workers():
        with contextlib.suppress(OSError):
            if environ_of(record["pid"]).get("SLURM_JOB_ID") == job:
                found.append(record)
    return found


def submit(client: httpx.Client, body: dict, wait: bool = True) -> dict:
    response = client.post("/v1/submissions", params={"wait": str(wait).lower()}, json=body)
    assert response.status_code == (200 if wait else 202), response.text
    return response.json()


def finished(client: httpx.Client, sub_id: str) -> dict | None:
    data = client.get(f"/v1/submissions/{sub_id}").json()
    return data if data["status"] in ("done", "failed") else None


def cells_of(user: str) -> list[int]:
    """Processes in the run cgroups of `user`'s cellblock subtree (memory hierarchy)."""
    pids = []
    for procs in (CGROUP_ROOT / "memory" / "cellblock" / user).glob("run-*/cgroup.procs"):
        with contextlib.suppress(OSError):
            pids += [int(p) for p in procs.read_text().split()]
    return pids


@pytest.mark.needs_root
@pytest.mark.needs_cgroup
def test_workers_in_a_slurm_job_judge_with_limits_and_stop_cleanly(slurm, service, test_user):
    store, client, redis_server = service
    cpus = min(2, os.cpu_count() or 1)
    job, log = slurm.submit_worker(redis_server.url, cpus)
    workers = wait_for(
        lambda: len(w := workers_of(store, job)) == cpus and w, 120, "the job's workers"
    )
    assert slurm.job_state(job) == "RUNNING"
    for record in workers:  # processes of the job, as the unprivileged user, on the node
        assert uid_of(record["pid"]) == test_user.pw_uid
        assert record["host"] == os.uname().nodename
    names = {record["name"] for record in workers}

    accepted = submit(client, {"language": "python3", "source": A_PLUS_B, "tests": TESTS})
    assert accepted["status"] == "done" and accepted["result"]["verdict"] == "AC", accepted
    assert accepted["result"]["score"] == 2.0
    wrong = submit(client, {"language": "python3", "source": "print(0)", "tests": TESTS})
    assert wrong["result"]["verdict"] == "WA"
    # The cell's memory cgroup works inside the job: the hog is stopped by its limit.
    hog = submit(client, MEMORY_HOG)
    assert hog["result"]["verdict"] == "MLE", hog
    assert hog["result"]["tests"][0]["oom_killed"] is True
    judged_by = {store.get(data["id"])["worker"] for data in (accepted, wrong, hog)}
    assert judged_by <= names

    # Where a running cell is: in cellblock's run cgroup for memory; in the job's
    # freezer cgroup when Slurm tracks the job with proctrack/cgroup.
    running = submit(client, slow(4), wait=False)
    cell_pids = wait_for(lambda: cells_of(test_user.pw_name), 30, "a running cell")
    cgroups = dict(
        line.split(":", 2)[1:] for line in Path(f"/proc/{cell_pids[0]}/cgroup").read_text().split()
    )
    assert cgroups["memory"].startswith(f"/cellblock/{test_user.pw_name}/run-")
    if slurm.tracking == "cgroup":
        assert f"/job_{job}/" in cgroups["freezer"]
        assert f"/job_{job}/" in cgroups["cpuset"]

    # Stopped mid-submission: SIGTERM reaches the worker, which finishes the
    # running submission within its grace (20 s < KillWait) and exits.
    wait_for(lambda: store.get(running["id"])["status"] == "running", 30, "the slow one to start")
    slurm.stop_job(job)
    record = wait_for(lambda: finished(client, running["id"]), 60, "the slow submission")
    assert record["status"] == "done" and record["attempt"] == 1, record
    assert record["result"]["verdict"] == "AC" and record["result"]["score"] == 4.0
    wait_for(lambda: slurm.job_state(job) == "", KILL_WAIT + 30, "the job to end")
    wait_for(lambda: not slurm.stepds(), 30, "the job's slurmstepd to exit")
    assert f"job {job}: worker exited with status 0" in log.read_text(), log.read_text()
    assert not workers_of(store, job)
    assert not [p for p in os.listdir("/proc") if p.isdigit() and _owned_by(p, test_user.pw_uid)]


def _owned_by(pid: str, uid: int) -> bool:
    with contextlib.suppress(OSError, StopIteration):
        return uid_of(int(pid)) == uid
    return False


@pytest.mark.needs_root
def test_scancel_with_no_grace_loses_no_submission(slurm, service, test_user):
    store, client, redis_server = service
    first, _ = slurm.submit_worker(redis_server.url, 1, grace=0.5, name="first")
    wait_for(lambda: workers_of(store, first), 120, "the first job's worker")
    sub_id = submit(client, slow(6), wait=False)["id"]
    wait_for(lambda: store.get(sub_id)["status"] == "running", 60, "its start")
    time.sleep(1.5)  # a test or two judged, a cell running
    worker = store.get(sub_id)["worker"]
    assert worker in {w["name"] for w in workers_of(store, first)}
    slurm.stop_job(first)
    wait_for(lambda: slurm.job_state(first) == "", KILL_WAIT + 30, "the first job to end")
    second, _ = slurm.submit_worker(redis_server.url, 1, name="second")
    record = wait_for(lambda: finished(client, sub_id), 180, "the submission, judged again")
    assert record["status"] == "done", record
    assert record["attempt"] == 2
    assert record["result"]["verdict"] == "AC" and record["result"]["score"] == 6.0
    final = store.get(sub_id)
    assert "lease" in final["last_error"]
    assert final["worker"] != worker
    assert final["worker"] in {w["name"] for w in workers_of(store, second)}


@pytest.mark.needs_root
def test_the_api_as_a_slurm_job(slurm, service):
    store, _, redis_server = service
    port = free_port()
    api_job, api_log = slurm.submit(
        SBATCH.with_name("cellblock-api.sbatch"),
        {
            "CELLBLOCK_REDIS_URL": redis_server.url,
            "CELLBLOCK_API_KEYS": KEY,
            "CELLBLOCK_API_HOST": "127.0.0.1",
            "CELLBLOCK_API_PORT": str(port),
        },
        1,
        min(500, slurm.memory_mb // 4),
        "api",
    )
    worker_job, _ = slurm.submit_worker(redis_server.url, 1, name="api-worker")
    wait_for(lambda: workers_of(store, worker_job), 120, "the worker job's worker")
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=HEADERS, timeout=90)
    try:
        wait_for(lambda: _answers(client), 60, "the API job")
        assert slurm.job_state(api_job) == "RUNNING"
        assert f"job {api_job}: http://" in api_log.read_text()
        data = submit(client, {"language": "python3", "source": A_PLUS_B, "tests": TESTS})
        assert data["result"]["verdict"] == "AC", data
        assert store.get(data["id"])["worker"] in {w["name"] for w in workers_of(store, worker_job)}
        slurm.stop_job(api_job)  # `cellblock serve` ends on SIGTERM: the job ends
        wait_for(lambda: slurm.job_state(api_job) == "", KILL_WAIT + 30, "the API job to end")
        assert not _answers(client)
    finally:
        client.close()


def _answers(client: httpx.Client) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return client.get("/v1/languages").status_code == 200
    return False


@pytest.mark.needs_root
def test_near_the_time_limit_the_job_stops_its_worker_and_requeues_itself(slurm, service):
    # What `--signal=B:USR1@120` sends before the time limit, sent now.
    store, _, redis_server = service
    job, log = slurm.submit_worker(redis_server.url, 1, name="limit")
    wait_for(lambda: workers_of(store, job), 120, "the job's worker")
    signalled = slurm.run("scancel", "--batch", "--signal=USR1", job)
    assert signalled.returncode == 0, signalled.stderr
    wait_for(lambda: slurm.job_state(job) == "PENDING", KILL_WAIT + 30, "the job to be requeued")
    text = log.read_text()
    assert f"job {job}: worker exited with status 0" in text, text
    assert f"requeueing job {job}" in text, text
    assert not workers_of(store, job)
    details = slurm.run("scontrol", "show", "job", job).stdout
    assert "Restarts=1" in details, details
