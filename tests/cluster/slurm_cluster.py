"""A throwaway single-node SLURM cluster for tests, and helpers to run Snakemake on it.

``slurm_cluster()`` installs Debian's SLURM packages if they are missing, writes a private
configuration into a temporary directory (linked from /etc/slurm/slurm.conf, the only place
the Snakemake jobstep plugin's inner ``srun`` finds it), starts munged, slurmctld and slurmd
on 127.0.0.1, waits until the node is idle and yields a :class:`SlurmCluster`. On exit it
cancels leftover jobs, stops the daemons by PID and removes the link it created.

``run_snakemake_on_slurm()`` runs ``snakemake --profile slurm`` (the repository's profile)
under ``timeout --signal=INT --kill-after=10``, so that a misconfigured status check cannot
hang a test run.

Everything here needs root. When the machine cannot run a cluster, :class:`ClusterUnavailable`
says exactly why (the pytest fixture turns that into a skip, or a failure when ``CI=true``).
"""

from __future__ import annotations

import contextlib
import fcntl
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO_ROOT / "slurm"
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
# binary -> package providing it
BINARIES = {
    "munged": "munge",
    "slurmctld": "slurmctld",
    "slurmd": "slurmd",
    "sbatch": "slurm-client",
    "squeue": "slurm-client",
    "sinfo": "slurm-client",
    "scancel": "slurm-client",
}
SYSTEM_CONF = Path("/etc/slurm/slurm.conf")
PARTITION = "main"
# Marks directories (and thus /etc/slurm/slurm.conf links) made by this module.
ROOT_PREFIX = "lookright-slurm-"
LOCK_DIR = Path("/run/lock") if Path("/run/lock").is_dir() else Path(tempfile.gettempdir())
LOCK_FILE = LOCK_DIR / "lookright-slurm.lock"
STATE_FILE = LOCK_DIR / "lookright-slurm.json"
# SLURM keeps finished jobs visible to `squeue --states=all` for MinJobAge seconds; the
# plugin's squeue status check needs this to be >= 3x its polling interval (max 180 s).
MIN_JOB_AGE_S = 600

_SUBMITTED_RE = re.compile(
    r"Job (?P<sm>\d+) has been submitted with SLURM jobid (?P<slurm>\d+) \(log: (?P<log>[^)]*)\)"
)


class ClusterUnavailable(RuntimeError):
    """This machine cannot run the test cluster; the message says why."""


@dataclass
class SlurmJob:
    """One row of ``squeue --states=all``."""

    job_id: str
    state: str
    name: str
    comment: str

    @property
    def rule(self) -> str:
        """Rule name from the plugin's comment (``rule_<name>`` or ``rule_<name>_wildcards_..``)."""
        comment = self.comment.removeprefix("rule_")
        return comment.split("_wildcards_", 1)[0]


@dataclass
class SlurmCluster:
    """A running test cluster: paths and small query helpers."""

    root: Path
    conf: Path
    log_dir: Path
    state_dir: Path
    spool_dir: Path
    munge_dir: Path
    node: str
    partition: str = PARTITION
    fake_gpus: int = 0
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        """Environment for SLURM client commands (no inherited SLURM_* variables)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_"))}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def command(self, *args: str, timeout_s: float = 30) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, timeout=timeout_s, check=False
        )

    def jobs(self) -> dict[str, SlurmJob]:
        """All jobs slurmctld still knows (finished ones for MinJobAge seconds), by job id."""
        out = self.command("squeue", "--states=all", "--noheader", "--format=%i|%T|%j|%k")
        if out.returncode != 0:
            raise RuntimeError(f"squeue failed: {out.stderr.strip()}")
        jobs = {}
        for line in out.stdout.splitlines():
            parts = line.strip().split("|", 3)
            if len(parts) == 4:
                jobs[parts[0]] = SlurmJob(*parts)
        return jobs

    def job_details(self, job_id: str) -> str:
        """``scontrol show job`` output (fields like TresPerJob=, NumCPUs=, MinMemoryNode=)."""
        return self.command("scontrol", "show", "job", job_id).stdout

    def daemon_log(self, daemon: str) -> str:
        path = self.log_dir / f"{daemon}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def diagnostics(self, tail_lines: int = 30) -> str:
        """Daemon log tails and the queue, for assertion messages."""
        parts = []
        for daemon in ("slurmctld", "slurmd", "munged"):
            tail = self.daemon_log(daemon).splitlines()[-tail_lines:]
            parts.append(f"--- {daemon}.log (tail) ---\n" + "\n".join(tail))
        try:
            queue = self.command("squeue", "--states=all", "--format=%i %T %j %k %R").stdout
        except (OSError, subprocess.SubprocessError) as exc:
            queue = f"squeue failed: {exc}"
        parts.append("--- squeue --states=all ---\n" + queue)
        return "\n".join(parts)


def skip_or_fail(reason: str) -> None:
    """pytest.skip with the reason, except on CI (CI=true): there not running is a failure."""
    import pytest

    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SLURM cluster tests cannot run on CI: {reason}", pytrace=False)
    pytest.skip(f"SLURM cluster tests skipped: {reason}")


# --------------------------------------------------------------------------------------
# preflight and installation


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None]


def ensure_packages(timeout_s: float = 600) -> None:
    """apt-get install the SLURM packages if a binary is missing (no-op otherwise)."""
    missing = _missing_binaries()
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise ClusterUnavailable(
            f"SLURM binaries missing ({', '.join(missing)}) and no apt-get to install "
            f"{' '.join(PACKAGES)}"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES]
    deadline = time.monotonic() + timeout_s
    attempts = []
    for cmd in (install, ["apt-get", "update", "-q"], install):
        left = deadline - time.monotonic()
        try:
            res = subprocess.run(
                cmd, env=env, capture_output=True, text=True, timeout=max(left, 1), check=False
            )
        except subprocess.TimeoutExpired:
            raise ClusterUnavailable(f"`{' '.join(cmd)}` timed out after {timeout_s} s") from None
        attempts.append(f"$ {' '.join(cmd)} -> {res.returncode}\n{res.stderr.strip()[-1500:]}")
        if cmd is install and res.returncode == 0:
            break
    missing = _missing_binaries()
    if missing:
        raise ClusterUnavailable(
            f"apt-get could not install {' '.join(PACKAGES)} (still missing: "
            f"{', '.join(missing)}):\n" + "\n".join(attempts)
        )


def preflight() -> None:
    """Raise ClusterUnavailable unless this machine can host the test cluster."""
    if not sys.platform.startswith("linux"):
        raise ClusterUnavailable(f"needs Linux, this is {sys.platform}")
    if os.geteuid() != 0:
        raise ClusterUnavailable(
            f"needs root to install packages and start munged/slurmctld/slurmd "
            f"(running as uid {os.geteuid()})"
        )
    if shutil.which("timeout") is None:
        raise ClusterUnavailable("needs coreutils' `timeout`")


# --------------------------------------------------------------------------------------
# process helpers


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child of ours counts as gone
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _stop_pid(pid: int, grace_s: float = 10) -> None:
    """SIGTERM, wait up to grace_s, then SIGKILL one process (started by us)."""
    if not _alive(pid):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if not _alive(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _cleanup_stale_run() -> None:
    """Stop daemons and drop the /etc/slurm link left behind by a killed earlier run.

    Only processes recorded in STATE_FILE whose command line still names that run's
    directory are stopped. Caller holds LOCK_FILE.
    """
    if not STATE_FILE.exists():
        return
    try:
        state = json.loads(STATE_FILE.read_text())
    except (OSError, ValueError):
        state = {}
    root = state.get("root", "")
    for pid in state.get("pids", {}).values():
        if root and root in _cmdline(int(pid)):
            _stop_pid(int(pid), grace_s=5)
    if SYSTEM_CONF.is_symlink() and root and os.readlink(SYSTEM_CONF).startswith(root):
        SYSTEM_CONF.unlink()
    if root and Path(root).name.startswith(ROOT_PREFIX):
        shutil.rmtree(root, ignore_errors=True)
    STATE_FILE.unlink(missing_ok=True)


@contextlib.contextmanager
def _exclusive_lock(timeout_s: float) -> Iterator[None]:
    """One test cluster per machine (the /etc/slurm link and the ports are global)."""
    LOCK_FILE.parent.mkdir(parents=True, exist_ok=True)
    with open(LOCK_FILE, "a+") as fh:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise ClusterUnavailable(
                        f"another test cluster held {LOCK_FILE} for more than {timeout_s} s"
                    ) from None
                time.sleep(1)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# --------------------------------------------------------------------------------------
# configuration


def _node_line(node: str, fake_gpus: int = 0) -> str:
    """`NodeName=... CPUs=... RealMemory=...` as `slurmd -C` reports this machine."""
    out = subprocess.run(
        ["slurmd", "-C"], capture_output=True, text=True, timeout=30, check=False
    ).stdout
    line = next((ln for ln in out.splitlines() if ln.startswith("NodeName=")), "")
    fields = dict(tok.split("=", 1) for tok in line.split() if "=" in tok)
    if not fields:
        fields = {"CPUs": str(os.cpu_count() or 1), "RealMemory": "1000"}
    fields["NodeName"] = node
    keep = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore")
    parts = [f"NodeName={node}", "NodeAddr=127.0.0.1"]
    parts += [f"{k}={fields[k]}" for k in keep if k in fields]
    # leave a little memory to the OS so that jobs asking for "all" still fit
    mem = max(int(fields.get("RealMemory", "1000")) - 256, 512)
    parts += [f"RealMemory={mem}", "State=UNKNOWN"]
    if fake_gpus:
        parts.append(f"Gres=gpu:{fake_gpus}")
    return " ".join(parts)


def write_slurm_conf(cluster: SlurmCluster, ctld_port: int, slurmd_port: int) -> None:
    d = cluster.root
    lines = [
        "# Written by tests/cluster/slurm_cluster.py for a throwaway single-node cluster.",
        "ClusterName=lookright-test",
        f"SlurmctldHost={cluster.node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        f"AuthInfo=socket={cluster.munge_dir / 'munge.socket.2'}",
        "CredType=cred/munge",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=1000",
        "ReturnToService=2",
        f"MinJobAge={MIN_JOB_AGE_S}",
        "KillWait=5",
        "InactiveLimit=0",
        "MailProg=/bin/true",
        f"StateSaveLocation={cluster.state_dir}",
        f"SlurmdSpoolDir={cluster.spool_dir}",
        f"SlurmctldPidFile={d / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={d / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={cluster.log_dir / 'slurmctld.log'}",
        f"SlurmdLogFile={cluster.log_dir / 'slurmd.log'}",
        "SlurmctldDebug=info",
        "SlurmdDebug=info",
        *(["GresTypes=gpu"] if cluster.fake_gpus else []),
        _node_line(cluster.node, cluster.fake_gpus),
        f"PartitionName={cluster.partition} Nodes={cluster.node} Default=YES "
        "MaxTime=INFINITE State=UP",
    ]
    cluster.conf.write_text("\n".join(lines) + "\n")
    if cluster.fake_gpus:
        # SLURM drops GPUs without device files; empty files named like NVIDIA's devices do.
        dev = cluster.root / "dev"
        dev.mkdir(exist_ok=True)
        for i in range(cluster.fake_gpus):
            (dev / f"nvidia{i}").touch()
        files = (
            f"{dev}/nvidia[0-{cluster.fake_gpus - 1}]"
            if cluster.fake_gpus > 1
            else f"{dev}/nvidia0"
        )
        (cluster.root / "gres.conf").write_text(f"Name=gpu File={files}\n")


# --------------------------------------------------------------------------------------
# the cluster


def _start(cluster: SlurmCluster, name: str, args: list[str], **kw) -> None:
    log = open(cluster.log_dir / f"{name}.stdout", "ab")  # the child keeps its own copy
    proc = subprocess.Popen(
        args,
        env=cluster.env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # a Ctrl-C in pytest must not hit the daemons first
        **kw,
    )
    log.close()
    cluster.pids[name] = proc.pid


def _record_state(cluster: SlurmCluster) -> None:
    STATE_FILE.write_text(json.dumps({"root": str(cluster.root), "pids": cluster.pids}))


def _wait(what: str, check, timeout_s: float, cluster: SlurmCluster) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        for name, pid in cluster.pids.items():
            if not _alive(pid):
                raise RuntimeError(
                    f"{name} (pid {pid}) died while waiting for {what}\n"
                    + (cluster.log_dir / f"{name}.stdout").read_text(errors="replace")[-3000:]
                    + "\n"
                    + cluster.diagnostics()
                )
        time.sleep(0.25)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}\n{cluster.diagnostics()}")


def _node_idle(cluster: SlurmCluster) -> bool:
    try:
        out = cluster.command("sinfo", "--noheader", "--Node", "--format=%T", timeout_s=10)
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0 and out.stdout.strip() == "idle"


def _start_daemons(cluster: SlurmCluster, start_timeout_s: float) -> None:
    munge = cluster.munge_dir
    try:
        munge_uid, munge_gid = pwd.getpwnam("munge").pw_uid, grp.getgrnam("munge").gr_gid
    except KeyError:
        raise ClusterUnavailable(
            "no `munge` user/group (is the munge package installed?)"
        ) from None
    munge.mkdir(mode=0o755)
    os.chown(munge, munge_uid, munge_gid)
    key = munge / "munge.key"
    key.write_bytes(os.urandom(1024))
    os.chown(key, munge_uid, munge_gid)
    key.chmod(0o600)
    _start(
        cluster,
        "munged",
        [
            shutil.which("munged") or "munged",
            "--foreground",
            f"--socket={munge / 'munge.socket.2'}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={cluster.log_dir / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
            "--num-threads=2",
        ],
        user=munge_uid,
        group=munge_gid,
        extra_groups=[],
    )
    _record_state(cluster)
    _wait("the munge socket", (munge / "munge.socket.2").exists, 20, cluster)

    _start(cluster, "slurmctld", ["slurmctld", "-D", "-i", "-f", str(cluster.conf)])
    _record_state(cluster)
    _start(cluster, "slurmd", ["slurmd", "-D", "-f", str(cluster.conf), "-N", cluster.node])
    _record_state(cluster)
    _wait(
        f"node {cluster.node} to be idle in sinfo",
        lambda: _node_idle(cluster),
        start_timeout_s,
        cluster,
    )


def _cancel_all_jobs(cluster: SlurmCluster, timeout_s: float = 20) -> None:
    try:
        jobs = cluster.jobs()
    except (RuntimeError, OSError, subprocess.SubprocessError):
        return
    active = [
        j.job_id
        for j in jobs.values()
        if j.state in {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED"}
    ]
    if not active:
        return
    cluster.command("scancel", *active)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            states = {j.state for j in cluster.jobs().values()}
        except (RuntimeError, OSError, subprocess.SubprocessError):
            return
        if not states & {"RUNNING", "COMPLETING", "CONFIGURING"}:
            return
        time.sleep(0.5)


@contextlib.contextmanager
def slurm_cluster(
    start_timeout_s: float = 60,
    lock_timeout_s: float = 600,
    install: bool = True,
    keep_dir: bool | None = None,
    fake_gpus: int = 2,
) -> Iterator[SlurmCluster]:
    """Start a single-node SLURM cluster on 127.0.0.1; stop it on exit.

    The node advertises ``fake_gpus`` GPUs (a ``gpu`` GRES without device files), so that rules
    with ``resources: gpu=1`` are scheduled (``sbatch --gpus=1``) and run on the CPU.

    Raises ClusterUnavailable (before touching anything global) when the machine cannot host
    it. The temporary directory is kept when the body raised or LOOKRIGHT_KEEP_SLURM=1 is
    set (or ``keep_dir=True``), removed otherwise.
    """
    preflight()
    if keep_dir is None:
        keep_dir = os.environ.get("LOOKRIGHT_KEEP_SLURM") == "1"

    with _exclusive_lock(lock_timeout_s):
        if install:
            ensure_packages()
        elif _missing_binaries():
            raise ClusterUnavailable(f"SLURM binaries missing: {', '.join(_missing_binaries())}")
        _cleanup_stale_run()
        if SYSTEM_CONF.exists() or SYSTEM_CONF.is_symlink():
            raise ClusterUnavailable(
                f"{SYSTEM_CONF} already exists and was not made by this test "
                f"(-> {os.path.realpath(SYSTEM_CONF)}); refusing to replace a real SLURM setup"
            )
        root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX, dir="/tmp"))
        root.chmod(0o755)  # munged runs as `munge` and must reach its directory
        for sub in ("log", "state", "spool", "run"):
            (root / sub).mkdir()
        cluster = SlurmCluster(
            root=root,
            conf=root / "slurm.conf",
            log_dir=root / "log",
            state_dir=root / "state",
            spool_dir=root / "spool",
            munge_dir=root / "munge",
            node=socket.gethostname().split(".")[0],
            fake_gpus=fake_gpus,
        )
        created_etc_dir = not SYSTEM_CONF.parent.exists()
        failed = True
        try:
            ctld_port, slurmd_port = _free_ports(2)
            write_slurm_conf(cluster, ctld_port, slurmd_port)
            SYSTEM_CONF.parent.mkdir(parents=True, exist_ok=True)
            SYSTEM_CONF.symlink_to(cluster.conf)
            _record_state(cluster)
            _start_daemons(cluster, start_timeout_s)
            yield cluster
            failed = False
        finally:
            if cluster.pids.get("slurmctld") and _alive(cluster.pids["slurmctld"]):
                _cancel_all_jobs(cluster)
            for name in ("slurmd", "slurmctld", "munged"):
                if name in cluster.pids:
                    _stop_pid(cluster.pids[name])
            if SYSTEM_CONF.is_symlink() and os.readlink(SYSTEM_CONF) == str(cluster.conf):
                SYSTEM_CONF.unlink()
            if created_etc_dir:
                with contextlib.suppress(OSError):
                    SYSTEM_CONF.parent.rmdir()
            STATE_FILE.unlink(missing_ok=True)
            if failed or keep_dir:
                print(f"slurm_cluster: kept {root} for inspection", file=sys.stderr)
            else:
                shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------------------
# running Snakemake on the cluster

FAST_POLLING_ARGS = (
    "--slurm-init-seconds-before-status-checks",
    "1",
    "--seconds-between-status-checks",
    "1",
)


def _snakemake_executable() -> str:
    local = Path(sys.executable).parent / "snakemake"
    return str(local) if local.exists() else (shutil.which("snakemake") or "snakemake")


def run_snakemake_on_slurm(
    workdir: Path | str,
    snakefile: Path | str,
    configfile: Path | str | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: int = 600,
    fast_polling: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run ``snakemake --profile slurm`` in ``workdir``, bounded by ``timeout -k 10 timeout_s``.

    ``workdir`` gets a ``slurm`` symlink to the repository's profile unless it already has a
    ``slurm`` entry (the repository root itself has the real one), so the command is exactly
    the documented ``snakemake --profile slurm``. ``fast_polling`` adds
    FAST_POLLING_ARGS (first status check after 1 s instead of 40 s). ``stdout`` of the
    result holds stdout and stderr together; ``returncode`` 124 (or 137 after the SIGKILL)
    means it ran out of time.
    """
    workdir = Path(workdir).resolve()
    link = workdir / "slurm"
    if not (link.exists() or link.is_symlink()):
        link.symlink_to(PROFILE_DIR, target_is_directory=True)
    # SIGINT, not timeout's default SIGTERM: on SIGTERM Snakemake only "exits after finishing
    # currently running jobs" (forever, if their status is never seen); on SIGINT it scancels
    # its jobs and exits. SIGKILL 10 s later if even that hangs.
    cmd = [
        "timeout",
        "--signal=INT",
        "--kill-after=10",
        str(timeout_s),
        _snakemake_executable(),
        "--profile",
        "slurm",
        "--snakefile",
        str(Path(snakefile).resolve()),
    ]
    if configfile is not None:
        cmd += ["--configfile", str(Path(configfile).resolve())]
    if fast_polling:
        cmd += list(FAST_POLLING_ARGS)
    cmd += list(extra_args)
    run_env = {k: v for k, v in (env or os.environ).items() if not k.startswith("SLURM_")}
    venv_bin = str(Path(sys.executable).parent)
    run_env["PATH"] = venv_bin + os.pathsep + run_env.get("PATH", "/usr/bin:/bin")
    try:
        res = subprocess.run(
            cmd,
            cwd=workdir,
            env=run_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout_s + 30,  # backstop; `timeout` itself fires first
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout
        return subprocess.CompletedProcess(cmd, 124, out or "", None)
    if res.returncode < 0:  # `timeout -k` SIGKILLs its own process group, itself included
        res.returncode = 128 - res.returncode
    return res


@dataclass
class Submission:
    snakemake_jobid: str
    slurm_jobid: str
    slurm_log: str


def submissions(log_text: str) -> list[Submission]:
    """Every ``sbatch`` the SLURM executor reported in a Snakemake log, in order."""
    return [
        Submission(m["sm"], m["slurm"], m["log"].strip()) for m in _SUBMITTED_RE.finditer(log_text)
    ]


def sbatch_job_ids(log_text: str) -> list[str]:
    """SLURM job ids of all jobs Snakemake submitted with sbatch, in submission order."""
    return [s.slurm_jobid for s in submissions(log_text)]
