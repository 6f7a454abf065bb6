"""``make cluster-up`` / ``make cluster-down``: a multi-node Ray cluster on this one machine.

A head node and N worker nodes, each its own ``ray start`` (own raylet, own temp dir, own CPUs
and a custom resource ``node_head`` / ``node_w1`` / ...), so ``make train-cluster`` exercises
what a real cluster does: job submission, a shipped working dir, Train workers on other nodes.

    python -m pipeline.launch.local_cluster up --workers 2 --cpus-per-node 1
    python -m pipeline.launch.local_cluster status
    python -m pipeline.launch.local_cluster down

The nodes start with ``WAVEGAN_LOCAL_CLUSTER=<state dir>`` in their environment; ``down`` stops
the processes carrying it and their descendants (Ray's workers, agents, job drivers), by PID. It
does not run ``ray stop``: that stops every Ray process of this user on the machine, including an
unrelated ``make train`` or another cluster.

Networking (Ray 2.60, checked on Linux): ``ray start`` replaces ``--node-ip-address 127.0.0.1``
with the machine's primary IP (multi-node clusters cannot use loopback), and the GCS / raylet gRPC
ports listen on all interfaces. The dashboard and job API listen on 127.0.0.1 only (``--dashboard-host``
to change), and the cluster runs with Ray's token authentication (``RAY_AUTH_MODE=token``, token
in ``~/.ray/auth_token``), so the open gRPC ports refuse callers without the token.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil

from common.paths import PROJECT_ROOT

DEFAULT_STATE_DIR = PROJECT_ROOT / ".cluster"
MARKER = "WAVEGAN_LOCAL_CLUSTER"
START_TIMEOUT_S = 180


class ClusterError(RuntimeError):
    """The cluster cannot be started or stopped as asked; the message says what to do."""


@dataclass
class ClusterState:
    """What ``up`` started, saved as ``<state dir>/state.json`` (read by ``status``, ``down`` and tests)."""

    state_dir: str
    port: int
    dashboard_host: str
    dashboard_port: int
    workers: int
    cpus_per_node: int
    object_store_mb: int
    temp_root: str
    auth_token: bool

    @property
    def job_address(self) -> str:
        host = "127.0.0.1" if self.dashboard_host in ("0.0.0.0", "::") else self.dashboard_host
        return f"http://{host}:{self.dashboard_port}"

    @property
    def node_names(self) -> list[str]:
        return ["head"] + [f"w{i}" for i in range(1, self.workers + 1)]

    def exports(self) -> dict[str, str]:
        """Environment for clients of this cluster (``make train-cluster``, ``ray job ...``)."""
        env = {"RAY_ADDRESS": self.job_address, "WAVEGAN_SHARED_STORAGE": "1"}  # every node is this machine
        if self.auth_token:
            env["RAY_AUTH_MODE"] = "token"
        return env

    def save(self) -> None:
        path = Path(self.state_dir) / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")


def load_state(state_dir: Path) -> ClusterState | None:
    path = state_dir / "state.json"
    if not path.exists():
        return None
    try:
        return ClusterState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as exc:
        raise ClusterError(f"{path} is not a state file of this tool ({exc}); delete it and run up again") from exc


# --- the processes of one cluster -------------------------------------------------------------

@dataclass(frozen=True)
class Proc:
    pid: int
    label: str


def _label(cmdline: list[str]) -> str:
    """A short name: gcs_server, raylet, dashboard.py, ray.util.client.server, ray::IDLE, python -c.

    A process title set with setproctitle (``ray::IDLE``, ``ray-dashboard-JobHead-0 (<command line>)``) is one
    argument, or several when psutil splits a title that fills the whole argument area at its spaces.
    """
    title = cmdline[0].split()[0]
    if title.startswith("ray-dashboard-"):
        return "ray-dashboard-module"
    if len(cmdline) == 1:  # a process title or a bare binary
        return Path(title).name
    for flag, label in (("-m", None), ("-c", "python -c")):
        if flag in cmdline[1:-1]:
            return label or cmdline[cmdline.index(flag) + 1]
    script = next((arg for arg in cmdline[1:] if arg.endswith(".py")), None)
    return Path(script or cmdline[0]).name


def cluster_processes(state_dir: Path) -> list[Proc]:
    """Live processes of the cluster: those whose environment carries its marker, and their descendants.

    Descendants count too because Ray's agents and workers rewrite their process title
    (setproctitle), which can blank what the kernel shows of their environment.
    """
    table: dict[int, tuple[int, list[str], bool]] = {}  # pid -> (parent pid, command line, marked)
    for proc in psutil.process_iter(["ppid", "cmdline", "environ", "status"]):
        info = proc.info  # an attribute psutil may not read (not our process, a zombie) is None
        cmdline = [arg for arg in info["cmdline"] or () if arg]
        if proc.pid == os.getpid() or info["environ"] is None or not cmdline or info["status"] == psutil.STATUS_ZOMBIE:
            continue
        table[proc.pid] = (info["ppid"], cmdline, info["environ"].get(MARKER) == str(state_dir))
    ours = {pid for pid, (_parent, _cmd, marked) in table.items() if marked}
    grew = True
    while grew:
        children = {pid for pid, (parent, _cmd, _marked) in table.items() if parent in ours} - ours
        ours |= children
        grew = bool(children)
    return [Proc(pid, _label(table[pid][1])) for pid in sorted(ours)]


def _stop(procs: list[Proc], state_dir: Path, grace_s: float) -> list[Proc]:
    """SIGTERM in Ray's order (raylets, the rest, the GCS last), SIGKILL what is left after ``grace_s``.

    Returns the processes that needed SIGKILL. The order matters: terminated together, raylets and
    the GCS wait on each other and sit out the whole grace period.
    """
    deadline = time.time() + grace_s
    for wave in ("raylet", None, "gcs_server"):
        pids = {p.pid for p in procs if p.label == wave or (wave is None and p.label not in ("raylet", "gcs_server"))}
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        while time.time() < deadline and pids & {p.pid for p in cluster_processes(state_dir)}:
            time.sleep(0.2)
    stubborn = cluster_processes(state_dir)  # includes any spawned during the shutdown
    for proc in stubborn:
        _signal(proc.pid, signal.SIGKILL)
    deadline = time.time() + 10
    while time.time() < deadline and cluster_processes(state_dir):
        time.sleep(0.2)
    return stubborn


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _summary(procs: list[Proc]) -> str:
    counts: dict[str, int] = {}
    for proc in procs:
        counts[proc.label] = counts.get(proc.label, 0) + 1
    return ", ".join(f"{name} x{n}" if n > 1 else name for name, n in sorted(counts.items()))


# --- up ---------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def _require_free(port: int, what: str, option: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Ray's servers: ignore TIME_WAIT leftovers
        try:
            sock.bind(("", port))
        except OSError as exc:
            raise ClusterError(f"port {port} ({what}) is already in use on this machine ({exc.strerror}): another "
                               f"Ray cluster, or the dashboard of an in-process `make train`? Pass {option} <free "
                               f"port>, or stop the other process.") from None


def _ray_executable() -> str:
    beside = Path(sys.executable).with_name("ray")
    found = str(beside) if beside.exists() else shutil.which("ray")
    if not found:
        raise ClusterError(f"no `ray` command next to {sys.executable} or on PATH: run `make setup`")
    return found


def _node_env(state: ClusterState) -> dict[str, str]:
    """The environment of every node, and so of every job driver and worker process on it."""
    env = {**os.environ, MARKER: state.state_dir}
    # Ray code that looks for "the" local cluster (Train's placement-group cleaner, the state API)
    # would otherwise find every Ray instance on this machine and give up: name ours
    env["RAY_ADDRESS"] = f"127.0.0.1:{state.port}"
    # job entrypoints run `python ...`: make that this interpreter (the venv),
    # as the image's python is on a real cluster
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # explicit either way: with RAY_AUTH_MODE unset, a head node turns token auth on when a token exists
    env["RAY_AUTH_MODE"] = "token" if state.auth_token else "disabled"
    return env


def _start_args(state: ClusterState, name: str) -> list[str]:
    # Ray 2.60 advertises the machine's primary IP instead of 127.0.0.1 (see the module docstring)
    args = ["start", "--node-ip-address", "127.0.0.1", "--num-cpus", str(state.cpus_per_node), "--num-gpus", "0",
            "--resources", json.dumps({f"node_{name}": 1}), "--temp-dir", str(Path(state.temp_root) / name),
            "--object-store-memory", str(state.object_store_mb * 1024 * 1024),
            "--dashboard-agent-listen-port", str(_free_port()), "--disable-usage-stats"]
    if name == "head":
        return args + ["--head", "--port", str(state.port), "--dashboard-host", state.dashboard_host,
                       "--dashboard-port", str(state.dashboard_port), "--ray-client-server-port", str(_free_port())]
    # each node keeps its own log monitor: nodes have their own temp dirs, so each streams only its own
    # workers' output to the job driver (without it, a rank on a worker node would print nowhere)
    return args + ["--address", f"127.0.0.1:{state.port}"]


def _ensure_auth_token(env: dict[str, str]) -> None:
    """Create ``~/.ray/auth_token`` when there is no token yet (keeps an existing one)."""
    result = subprocess.run(
        [_ray_executable(), "get-auth-token", "--generate"], env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ClusterError(f"`ray get-auth-token --generate` failed: {result.stderr.strip()[-2000:]}")


def _alive_nodes(state: ClusterState) -> int | None:
    """How many nodes are alive as the head's dashboard reports them; None while it does not answer."""
    names = _alive_node_names(state)
    return None if names is None else len(names)


def _alive_node_names(state: ClusterState) -> set[str] | None:
    """Names of the alive nodes (from their ``node_<name>`` resource); None while the head does not answer.

    Ray's HTTP clients send the token only in token mode, read from the environment: it is set for
    the call and put back after, so a Ray started later by this process keeps its own auth mode.
    """
    before = os.environ.get("RAY_AUTH_MODE")
    if state.auth_token:
        os.environ["RAY_AUTH_MODE"] = "token"
    try:
        from ray.util.state import list_nodes  # imported in token mode: Ray reads the mode when it loads

        nodes = list_nodes(address=state.job_address, filters=[("state", "=", "ALIVE")], detail=True, timeout=10,
                           raise_on_missing_output=False)
    except Exception:
        return None
    finally:
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before
    return {key[len("node_"):] for node in nodes for key in (node.resources_total or {}) if key.startswith("node_")}


def _start_node(state: ClusterState, name: str, env: dict[str, str]) -> None:
    log = Path(state.state_dir) / f"start-{name}.log"
    with log.open("w") as out:
        result = subprocess.run([_ray_executable(), *_start_args(state, name)], env=env, stdout=out,
                                stderr=subprocess.STDOUT, timeout=START_TIMEOUT_S)
    if result.returncode != 0:
        raise ClusterError(f"`ray start` of node {name} failed (exit {result.returncode}); its output, in "
                           f"{log}, ends with:\n{log.read_text()[-3000:]}")


def _wait_for_nodes(state: ClusterState, timeout_s: float) -> None:
    want = len(state.node_names)
    deadline = time.time() + timeout_s
    alive = None
    while time.time() < deadline:
        alive = _alive_nodes(state)
        if alive == want:
            return
        time.sleep(1)
    raise ClusterError(f"only {alive or 0} of {want} nodes came up within {timeout_s:.0f} s; node logs: "
                       f"{state.temp_root}/<node>/session_latest/logs. `make cluster-down` cleans up.")


def up(state: ClusterState) -> bool:
    """Start the cluster described by ``state``; False when this very cluster is already up."""
    state_dir = Path(state.state_dir)
    running = load_state(state_dir)
    procs = cluster_processes(state_dir)
    if running and procs:
        same = (running.workers, running.cpus_per_node, running.port, running.dashboard_port) == \
               (state.workers, state.cpus_per_node, state.port, state.dashboard_port)
        if not same:
            raise ClusterError(f"a local cluster is already up with {running.workers} worker node(s), "
                               f"{running.cpus_per_node} CPU(s) per node, port {running.port}, dashboard port "
                               f"{running.dashboard_port}: run `make cluster-down` first to change it")
        alive = _alive_node_names(running)
        missing = [name for name in running.node_names if alive is not None and name not in alive]
        if alive is None or "head" in missing:
            raise ClusterError("the local cluster's head node does not answer: run `make cluster-down`, "
                               "then `make cluster-up`")
        if not missing:
            return False
        # a worker node died (killed raylet, OOM): start it again, as an autoscaler would replace it
        print(f"[cluster] restarting dead worker node(s): {', '.join(missing)}", flush=True)
        for name in missing:
            _start_node(running, name, _node_env(running))
        _wait_for_nodes(running, START_TIMEOUT_S)
        return True
    if procs:  # leftovers of a cluster whose state file is gone, or of a failed start
        stubborn = _stop(procs, state_dir, grace_s=10)
        print(f"[cluster] stopped leftover processes of an earlier start: {_summary(procs)}"
              + (f" ({len(stubborn)} needed SIGKILL)" if stubborn else ""), flush=True)

    _require_free(state.port, "GCS", "--port")
    _require_free(state.dashboard_port, "dashboard / job API", "--dashboard-port")
    state_dir.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(state.temp_root, ignore_errors=True)
    env = _node_env(state)
    if state.auth_token:
        _ensure_auth_token(env)
    for name in state.node_names:
        try:
            _start_node(state, name, env)
        except ClusterError:
            _stop(cluster_processes(state_dir), state_dir, grace_s=5)
            raise
    state.save()
    _wait_for_nodes(state, START_TIMEOUT_S)
    return True


def down(state_dir: Path, grace_s: float) -> list[Proc]:
    """Stop every process of the cluster; returns what was running. Raises when something survives."""
    state = load_state(state_dir)
    procs = cluster_processes(state_dir)
    stubborn = _stop(procs, state_dir, grace_s) if procs else []
    left = cluster_processes(state_dir)
    if left:
        raise ClusterError(f"still running after SIGKILL: {', '.join(f'{p.label} (pid {p.pid})' for p in left)}")
    if stubborn:
        print(f"[cluster] {len(stubborn)} process(es) ignored SIGTERM for {grace_s:.0f} s and got SIGKILL: "
              f"{_summary(stubborn)}", flush=True)
    if state:
        shutil.rmtree(state.temp_root, ignore_errors=True)
    (state_dir / "state.json").unlink(missing_ok=True)
    return procs


# --- command line -----------------------------------------------------------------------------

def _print_up(state: ClusterState, started: bool) -> None:
    what = "started" if started else "already up"
    print(f"[cluster] {what}: head + {state.workers} worker node(s), {state.cpus_per_node} CPU(s) each, on this "
          f"machine (GCS port {state.port}, Ray logs in {state.temp_root}/<node>/session_latest/logs)")
    print(f"[cluster] dashboard and job API: {state.job_address}  (listening on {state.dashboard_host} only)")
    print("[cluster] use it from this shell with:\n")
    print("  export " + " ".join(f"{k}={v}" for k, v in state.exports().items()))
    print("\n  make train-cluster ARGS=\"preset=tiny\"     # stop the cluster with: make cluster-down")


def _print_status(state_dir: Path) -> int:
    state, procs = load_state(state_dir), cluster_processes(state_dir)
    if not state and not procs:
        print("[cluster] not running")
        return 1
    if not state:
        print(
            f"[cluster] no state file but {len(procs)} leftover process(es) ({_summary(procs)}): "
            "run `make cluster-down`"
        )
        return 1
    alive = _alive_nodes(state) if procs else 0
    print(f"[cluster] {alive or 0} of {len(state.node_names)} nodes alive at {state.job_address}; "
          f"{len(procs)} processes ({_summary(procs)})")
    return 0 if alive == len(state.node_names) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.launch.local_cluster",
        description="A Ray cluster of several nodes on this machine (head + worker nodes as separate `ray start` "
                    "processes), for `make train-cluster` without a real cluster. All nodes share this machine's "
                    "disk, so local data.dir / train.storage_path work (WAVEGAN_SHARED_STORAGE=1).",
        epilog="Examples: make cluster-up ARGS='--workers 2' ; make cluster-down. Token authentication is on "
               "unless RAY_AUTH_MODE=disabled is set. To reach the dashboard from another machine, tunnel it: "
               "ssh -L 8265:127.0.0.1:8265 <this host>.")
    parser.add_argument("command", choices=("up", "down", "status"),
                        help="up: start (idempotent); down: stop every process of the cluster; status: nodes alive")
    parser.add_argument("--workers", type=int, default=1, help="worker nodes besides the head (default: 1)")
    parser.add_argument("--cpus-per-node", type=int, default=1,
                        help="CPUs each node (head included) offers to Ray (default: 1)")
    parser.add_argument("--port", type=int, default=6379, help="GCS port of the head node (default: 6379)")
    parser.add_argument("--dashboard-port", type=int, default=8265, help="dashboard and job API port (default: 8265)")
    parser.add_argument("--dashboard-host", default="127.0.0.1",
                        help="interface the dashboard / job API listens on (default: 127.0.0.1; 0.0.0.0 exposes "
                             "the job API, which runs arbitrary code, to the network)")
    parser.add_argument("--object-store-mb", type=int, default=256, help="object store per node in MiB (default: 256)")
    parser.add_argument("--grace-period", type=float, default=10,
                        help="down: seconds between SIGTERM and SIGKILL (default: 10)")
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=DEFAULT_STATE_DIR,
        help=f"where the state file and start logs go; also names the cluster (default: {DEFAULT_STATE_DIR})",
    )
    args = parser.parse_args(argv)
    if args.workers < 0 or args.cpus_per_node < 1 or args.object_store_mb < 80:
        parser.error(f"need --workers >= 0, --cpus-per-node >= 1 and --object-store-mb >= 80 (Ray's minimum); got "
                     f"{args.workers}, {args.cpus_per_node}, {args.object_store_mb}")
    args.state_dir = args.state_dir.expanduser().resolve()
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.command == "status":
            return _print_status(args.state_dir)
        if args.command == "down":
            stopped = down(args.state_dir, args.grace_period)
            print(f"[cluster] stopped {len(stopped)} processes: {_summary(stopped)}" if stopped
                  else "[cluster] not running: nothing to stop")
            return 0
        state = ClusterState(
            state_dir=str(args.state_dir), port=args.port, dashboard_host=args.dashboard_host,
            dashboard_port=args.dashboard_port, workers=args.workers, cpus_per_node=args.cpus_per_node,
            object_store_mb=args.object_store_mb,
            temp_root=str(Path(tempfile.gettempdir()) / f"ray-wavegan-{os.getuid()}-{args.port}"),
            auth_token=os.environ.get("RAY_AUTH_MODE", "token") == "token")
        started = up(state)
        _print_up(state if started else load_state(args.state_dir), started)
        return 0
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
