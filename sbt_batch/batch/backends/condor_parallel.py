"""One node of an HTCondor parallel-universe job: ``sbt-batch task condor-node RUN_DIR INDEX``.

``submit train --backend condor --nodes N --ntasks-per-node T`` renders ``universe = parallel`` with
``machine_count = N``; HTCondor starts this wrapper once per node (``$_CONDOR_PROCNO`` of
``$_CONDOR_NPROCS``). No ssh and no mpirun cross the machines: Horovod runs on its Gloo controller
with an explicit rendezvous, as ``horovodrun --gloo`` would set it up.

* Node 0 starts Horovod's own HTTP rendezvous server (``horovod.runner``, pure Python) on the address
  HTCondor advertises for its machine and publishes ``ip:port``; the other nodes wait for it.
* Nodes exchange the address and their exit codes through ``condor_chirp set_job_attr/get_job_attr``
  (``+WantIOProxy``; no shared filesystem needed) or, without chirp, small files in the run directory.
* Each node starts its T ranks with the ``HOROVOD_*`` environment (rank, size, local/cross rank,
  rendezvous address, Gloo controller, interface). Global rank 0 runs ``sbt-batch task run`` and is the
  only one to record task state; the other ranks run the task's command directly.
* Node 0 waits for its ranks and the other nodes' exit codes and exits with the first failure (its
  exit ends the parallel job). SIGTERM goes to the ranks, which checkpoint and exit 75.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from sbt_batch.batch.run import T_COMPLETED, T_FAILED, T_KILLED, Run, default_sbt_command
from sbt_batch.batch.task import task_argv, task_cwd
from sbt_batch.common.errors import UserError
from sbt_batch.common.fileio import write_text_atomic

LAUNCHER_NAME = "condor parallel (gloo)"
IFACE_ENV = "SBT_BATCH_GLOO_IFACE"  # force the network interface (e.g. ib0, lo)
EXCHANGE_ENV = "SBT_BATCH_NODE_EXCHANGE"  # chirp | file (default: chirp when the job has an I/O proxy)
TIMEOUT_ENV = "SBT_BATCH_NODE_TIMEOUT"  # seconds to wait for the other nodes (default 600)
CHIRP_ENV = "SBT_BATCH_CONDOR_CHIRP"  # path of condor_chirp
CHIRP_PATHS = ("/usr/libexec/condor/condor_chirp", "/usr/lib/condor/libexec/condor_chirp")
ATTR_PREFIX = "SbtBatchNode"
_VALUE = re.compile(r"[A-Za-z0-9.:_-]+")
POLL = 0.5
REMOTE_POLL = 5.0


def node_log(message: str) -> None:
    """One line in this node's job log (the job's stderr, ``logs/condor-<n>-<i>.node<k>.err``), written at once.

    The node wrapper is the job: its stderr is the log people read, whatever the logging level.
    """
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


# ---- where this node sits ---------------------------------------------------------------------


def node_position(env: Mapping[str, str]) -> tuple[int, int]:
    """(node number, number of nodes) from HTCondor's ``_CONDOR_PROCNO`` / ``_CONDOR_NPROCS``."""
    procno, nprocs = env.get("_CONDOR_PROCNO", ""), env.get("_CONDOR_NPROCS", "")
    if not (procno.isdigit() and nprocs.isdigit()) or int(procno) >= int(nprocs):
        raise UserError("task condor-node: _CONDOR_PROCNO/_CONDOR_NPROCS are not set: run it as the node "
                        "wrapper of an HTCondor parallel-universe job")
    return int(procno), int(nprocs)


def ranks_per_node(run: Run, nodes: int) -> int:
    """The ranks each node starts: the run's ``ntasks`` divided by its ``nodes``."""
    res = run.resources
    total, planned = int(res.get("ntasks") or nodes), int(res.get("nodes") or nodes)
    if planned != nodes:
        raise UserError(f"task condor-node: HTCondor started {nodes} nodes, the run planned {planned}")
    if total % nodes:
        raise UserError(f"task condor-node: {total} ranks do not divide over {nodes} nodes")
    return total // nodes


def read_ad(path: str | None) -> dict[str, str]:
    """The ``Name = value`` lines of a ClassAd file (``_CONDOR_JOB_AD``, ``_CONDOR_MACHINE_AD``); {} when absent."""
    out: dict[str, str] = {}
    if not path or not os.path.isfile(path):
        return out
    for line in Path(path).read_text(errors="replace").splitlines():
        name, eq, value = line.partition(" = ")
        if eq:
            out[name.strip()] = value.strip()
    return out


def generation(env: Mapping[str, str]) -> str:
    """A name for this execution of the job, the same on every node (a restarted job gets a new one)."""
    ad = read_ad(env.get("_CONDOR_JOB_AD"))
    job = env.get("SBT_BATCH_JOB_ID") or f"{ad.get('ClusterId', '0')}.{ad.get('ProcId', '0')}"
    start = ad.get("JobCurrentStartDate") or ad.get("NumShadowStarts") or ad.get("NumJobStarts") or "0"
    return re.sub(r"[^A-Za-z0-9]", "_", f"{job}_{start}")


# ---- network ------------------------------------------------------------------------------------


def _ipv4_of(iface: str) -> str:
    import psutil

    for addr in psutil.net_if_addrs().get(iface, []):
        if addr.family == socket.AF_INET:
            return addr.address
    raise UserError(f"{IFACE_ENV}={iface}: no IPv4 address on this interface")


def iface_of(ip: str) -> str:
    """The name of the local interface that holds ``ip``."""
    import psutil

    for name, addrs in psutil.net_if_addrs().items():
        if any(a.family == socket.AF_INET and a.address == ip for a in addrs):
            return name
    raise UserError(f"task condor-node: no local interface has the address {ip}; set {IFACE_ENV} in the site profile's env")


def node_address(env: Mapping[str, str]) -> str:
    """The IPv4 address of this machine that other nodes reach: the forced interface, else HTCondor's own."""
    if env.get(IFACE_ENV):
        return _ipv4_of(env[IFACE_ENV])
    my = read_ad(env.get("_CONDOR_MACHINE_AD")).get("MyAddress", "")
    found = re.search(r"<(\d+\.\d+\.\d+\.\d+):", my)
    if found:
        return found.group(1)
    try:
        return socket.gethostbyname(socket.getfqdn())
    except OSError:
        raise UserError(f"task condor-node: cannot find this machine's address; set {IFACE_ENV}") from None


def route_iface(target: str, env: Mapping[str, str]) -> str:
    """The local interface that reaches ``target`` (a UDP connect sends nothing; it only picks a route)."""
    if env.get(IFACE_ENV):
        return env[IFACE_ENV]
    if ipaddress.ip_address(target).is_loopback:
        return iface_of("127.0.0.1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((target, 9))
        return iface_of(s.getsockname()[0])


# ---- exchanging small values between nodes ------------------------------------------------------


class Exchange(Protocol):
    """A tiny key/value board that every node of the job reads and writes."""

    name: str

    def put(self, key: str, value: str) -> None: ...

    def get(self, key: str) -> str | None: ...


def _check_value(value: str) -> str:
    if not _VALUE.fullmatch(value):
        raise ValueError(f"exchange value {value!r}")
    return value


class FileExchange:
    """Files ``tasks/<i>/nodes/<generation>/<key>`` in the run directory (shared-filesystem mode)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.name = f"files in {folder}"
        folder.mkdir(parents=True, exist_ok=True)

    def put(self, key: str, value: str) -> None:
        write_text_atomic(self.folder / key, _check_value(value))

    def get(self, key: str) -> str | None:
        try:
            return (self.folder / key).read_text().strip() or None
        except FileNotFoundError:
            return None


class ChirpExchange:
    """Attributes of the job ad through ``condor_chirp`` (needs ``+WantIOProxy = true``)."""

    def __init__(self, chirp: str, gen: str) -> None:
        self.chirp, self.gen = chirp, gen
        self.name = f"condor_chirp job attributes {ATTR_PREFIX}_{gen}_*"

    def _attr(self, key: str) -> str:
        return f"{ATTR_PREFIX}_{self.gen}_{re.sub(r'[^A-Za-z0-9]', '_', key)}"

    def put(self, key: str, value: str) -> None:
        r = subprocess.run([self.chirp, "set_job_attr", self._attr(key), f'"{_check_value(value)}"'],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        if r.returncode != 0:
            raise UserError(f"condor_chirp set_job_attr failed: {(r.stderr or r.stdout).strip()[-200:]}")

    def get(self, key: str) -> str | None:
        r = subprocess.run([self.chirp, "get_job_attr", self._attr(key)], capture_output=True, text=True,
                           timeout=60, stdin=subprocess.DEVNULL)
        text = r.stdout.strip()
        if r.returncode != 0 or not text.startswith('"'):
            return None  # UNDEFINED (not set yet) or a transient chirp error: ask again
        return text.strip('"') or None


def find_chirp(env: Mapping[str, str]) -> str | None:
    """``condor_chirp`` when this job has an I/O proxy (``_CONDOR_CHIRP_CONFIG``), else None."""
    if not env.get("_CONDOR_CHIRP_CONFIG") and not os.path.isfile(os.path.join(env.get("_CONDOR_SCRATCH_DIR", "."), ".chirp.config")):
        return None
    for path in (env.get(CHIRP_ENV), shutil.which("condor_chirp"), *CHIRP_PATHS):
        if path and os.access(path, os.X_OK):
            return path
    return None


def open_exchange(run: Run, index: int, env: Mapping[str, str]) -> Exchange:
    """Chirp when available (or forced with SBT_BATCH_NODE_EXCHANGE=chirp), else files in the run directory."""
    how, gen = env.get(EXCHANGE_ENV, ""), generation(env)
    if how not in ("", "chirp", "file"):
        raise UserError(f"{EXCHANGE_ENV}: expected chirp or file, got {how!r}")
    chirp = find_chirp(env) if how != "file" else None
    if how == "chirp" and chirp is None:
        raise UserError(f"{EXCHANGE_ENV}=chirp: condor_chirp or the job's I/O proxy (+WantIOProxy) is missing")
    return ChirpExchange(chirp, gen) if chirp else FileExchange(run.task_dir(index) / "nodes" / gen)


def wait_for(exchange: Exchange, key: str, timeout: float) -> str | None:
    """Poll ``exchange`` for ``key`` until it appears or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = exchange.get(key)
        if value is not None or time.monotonic() > deadline:
            return value
        time.sleep(POLL)


# ---- the rendezvous server (node 0) -------------------------------------------------------------


def host_label(node: int) -> str:
    """The HOROVOD_HOSTNAME of ``node``: unique per node even when two nodes share a machine."""
    return f"{socket.gethostname().split('.')[0]}-node{node}"


def start_rendezvous(ip: str, labels: list[str], per_node: int) -> tuple[Any, int]:
    """Horovod's HTTP rendezvous server on ``ip`` for ``per_node`` ranks on each host label; (server, port)."""
    from sbt_batch.common.optional import require

    hosts = require("horovod.runner.common.util.hosts", "task condor-node (node 0)")
    http = require("horovod.runner.http.http_server", "task condor-node (node 0)")
    server = http.RendezvousHTTPServer((ip, 0), http.RendezvousHandler, 0)
    plan = hosts.get_host_assignments(hosts.parse_hosts(",".join(f"{h}:{per_node}" for h in labels)), len(labels) * per_node)
    server.init(plan)
    threading.Thread(target=server.serve_forever, name="rendezvous", daemon=True).start()
    return server, int(server.server_address[1])


# ---- ranks ---------------------------------------------------------------------------------------


def rank_environment(base: Mapping[str, str], *, node: int, nodes: int, per_node: int, local: int,
                     labels: list[str], addr: str, port: int, iface: str, cpus: int) -> dict[str, str]:
    """The environment of local rank ``local`` on ``node``: what horovodrun --gloo would give it."""
    env = dict(base)
    env.update({
        "HOROVOD_HOSTNAME": labels[node],
        "HOROVOD_RANK": str(node * per_node + local),
        "HOROVOD_SIZE": str(nodes * per_node),
        "HOROVOD_LOCAL_RANK": str(local),
        "HOROVOD_LOCAL_SIZE": str(per_node),
        "HOROVOD_CROSS_RANK": str(node),
        "HOROVOD_CROSS_SIZE": str(nodes),
        "HOROVOD_GLOO_RENDEZVOUS_ADDR": addr,
        "HOROVOD_GLOO_RENDEZVOUS_PORT": str(port),
        "HOROVOD_CONTROLLER": "gloo",
        "HOROVOD_CPU_OPERATIONS": "gloo",
        "HOROVOD_GLOO_IFACE": iface,
        "SBT_BATCH_RANK_LAUNCHER": LAUNCHER_NAME,
        "PYTHONUNBUFFERED": "1",
    })
    threads = str(max(1, cpus // per_node))  # the slot's CPUs, shared by this node's ranks
    env["TF_NUM_INTRAOP_THREADS"] = env["OMP_NUM_THREADS"] = threads
    env.setdefault("TF_NUM_INTEROP_THREADS", "1")
    gpus = [g for g in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if g.strip()]
    if gpus:  # HTCondor lists the node's GPUs; one each, round robin
        env["CUDA_VISIBLE_DEVICES"] = gpus[local % len(gpus)]
    return env


def slot_cpus(env: Mapping[str, str]) -> int:
    """CPUs of this node's slot (the machine ad's Cpus), else the machine's."""
    value = read_ad(env.get("_CONDOR_MACHINE_AD")).get("Cpus", "")
    return int(value) if value.isdigit() else os.cpu_count() or 1


def rank_argv(run: Run, run_dir: str, index: int, rank: int) -> list[str]:
    """Global rank 0 runs the recording task wrapper; the others run the task's command itself."""
    if rank == 0:
        return [*default_sbt_command(), "task", "run", run_dir, str(index)]
    return task_argv(run, index)


class Ranks:
    """This node's rank processes: start, forward signals, wait."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []
        self.signalled: list[int] = []

    def start(self, argv: list[str], env: dict[str, str], cwd: str | None) -> None:
        self.procs.append(subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL))

    def terminate(self, signum: int = signal.SIGTERM) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.send_signal(signum)
                except ProcessLookupError:
                    pass

    def first_failure(self) -> int | None:
        """The first non-zero exit code among ranks that ended (None while all that ended succeeded)."""
        for p in self.procs:
            rc = p.poll()
            if rc is not None and rc != 0:
                return rc if rc > 0 else 128 - rc
        return None

    def done(self) -> bool:
        return all(p.poll() is not None for p in self.procs)

    def exit_code(self) -> int:
        return self.first_failure() or 0


def run_node(run_dir: str | Path, index: int, env: Mapping[str, str] | None = None) -> int:
    """Run this node's share of task ``index`` of a parallel-universe job; the node's exit code."""
    env = dict(os.environ if env is None else env)
    node, nodes = node_position(env)
    run = Run.open(run_dir)
    per_node = ranks_per_node(run, nodes)
    timeout = float(env.get(TIMEOUT_ENV) or 600)
    exchange = open_exchange(run, index, env)
    labels = [host_label(k) for k in range(nodes)]
    server = None
    if node == 0:
        addr = node_address(env)
        server, port = start_rendezvous(addr, labels, per_node)
        exchange.put("rendezvous", f"{addr}:{port}")
    else:
        found = wait_for(exchange, "rendezvous", timeout)
        if found is None:
            node_log(f"error: node {node}: no rendezvous address from node 0 within {timeout:.0f} s")
            return 1
        addr, _, port_text = found.rpartition(":")
        port = int(port_text)
    iface = route_iface(addr, env)
    node_log(f"node {node}/{nodes} on {socket.gethostname()}: ranks {node * per_node}-{(node + 1) * per_node - 1} "
             f"of {nodes * per_node}, rendezvous {addr}:{port} via {iface}; exchange: {exchange.name}")
    ranks = Ranks()

    def stop(signum: int, _frame: Any) -> None:
        ranks.signalled.append(signum)
        ranks.terminate()

    old = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1)}
    try:
        cpus = slot_cpus(env)
        for local in range(per_node):
            rank = node * per_node + local
            ranks.start(rank_argv(run, str(run_dir), index, rank),
                        rank_environment(env, node=node, nodes=nodes, per_node=per_node, local=local, labels=labels,
                                         addr=addr, port=port, iface=iface, cpus=cpus), task_cwd(run))
        if node:
            return _wait_node(ranks, exchange, node)
        rc, culprit = _wait_node0(ranks, exchange, nodes, timeout)
        if rc and not ranks.signalled:
            record_failure(run, index, rc, culprit)
        return rc
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if server is not None:
            server.shutdown()
            server.server_close()


def _wait_node(ranks: Ranks, exchange: Exchange, node: int) -> int:
    """Node k > 0: wait for the local ranks and report their exit code to node 0."""
    while not ranks.done():
        if ranks.first_failure() is not None:
            ranks.terminate()
        time.sleep(POLL)
    rc = ranks.exit_code()
    exchange.put(f"exit{node}", str(rc))
    return rc


def _wait_node0(ranks: Ranks, exchange: Exchange, nodes: int, timeout: float) -> tuple[int, int | None]:
    """Node 0: wait for the local ranks and every node's exit code; (first failure or 0, its node)."""
    codes: dict[int, int] = {}
    failed: tuple[int, int] | None = None
    finished_at: float | None = None
    asked = 0.0
    while True:
        # While the local ranks train, ask the other nodes (one chirp call each) only every REMOTE_POLL s.
        ask = ranks.done() or time.monotonic() - asked >= REMOTE_POLL
        asked = time.monotonic() if ask else asked
        for k in range(1, nodes):
            if ask and k not in codes and (value := exchange.get(f"exit{k}")) is not None:
                codes[k] = int(value)
                if codes[k] != 0 and failed is None:
                    node_log(f"error: node {k} exited with {codes[k]}")
                    failed = (codes[k], k)
                    ranks.terminate()
        local = ranks.first_failure()
        if local is not None and failed is None:
            failed = (local, 0)
            ranks.terminate()
        if ranks.done():
            finished_at = finished_at or time.monotonic()
            if len(codes) == nodes - 1 or failed is not None:
                break
            if time.monotonic() - finished_at > timeout:
                missing = sorted(set(range(1, nodes)) - set(codes))
                node_log(f"error: nodes {missing} did not report an exit code within {timeout:.0f} s")
                return 1, missing[0]
        time.sleep(POLL)
    summary = {"node0": ranks.exit_code(), **{f"node{k}": c for k, c in sorted(codes.items())}}
    node_log(f"node exit codes: {json.dumps(summary)}")
    return failed if failed is not None else (0, None)


def record_failure(run: Run, index: int, rc: int, node: int | None) -> None:
    """Mark the task failed when another rank or node failed after rank 0 had recorded its own end."""
    state = run.read_state(index)
    if not state or state.get("state") not in (T_COMPLETED, T_KILLED) or state.get("exit_code") == rc:
        return
    state.update(state=T_FAILED, exit_code=rc, signal=None, failed_node=node)
    run.write_state(index, state)


# ---- a rank probe for tests ----------------------------------------------------------------------


def rank_probe(out_dir: Path, fail_rank: int | None = None, exit_code: int = 0, sleep: float = 0.0) -> int:
    """Write this rank's HOROVOD_* environment to ``out_dir/rank-R.json`` after a round trip through the rendezvous server.

    Every rank PUTs its rank into the server's ``sbtprobe`` scope and reads all the others', so the
    file proves that all ranks reached the same server. ``fail_rank`` exits with ``exit_code``.
    """
    env = os.environ
    rank, size = int(env["HOROVOD_RANK"]), int(env["HOROVOD_SIZE"])

    def stop(signum: int, _frame: Any) -> None:  # as training does: note the signal, exit 75
        from sbt_batch.common.errors import EXIT_REQUEUE

        write_text_atomic(out_dir / f"rank-{rank}.sigterm", str(signum))
        os._exit(EXIT_REQUEUE)

    signal.signal(signal.SIGTERM, stop)
    base = f"http://{env['HOROVOD_GLOO_RENDEZVOUS_ADDR']}:{env['HOROVOD_GLOO_RENDEZVOUS_PORT']}/sbtprobe"
    urllib.request.urlopen(urllib.request.Request(f"{base}/{rank}", data=str(rank).encode(), method="PUT"), timeout=10).read()
    seen: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while len(seen) < size and time.monotonic() < deadline:
        for r in range(size):
            if r not in seen:
                try:
                    seen[r] = urllib.request.urlopen(f"{base}/{r}", timeout=10).read().decode()
                except OSError:
                    pass
        time.sleep(0.2)
    record: dict[str, Any] = {k: v for k, v in env.items() if k.startswith("HOROVOD_")}
    record.update(host=socket.gethostname(), pid=os.getpid(), node=env.get("_CONDOR_PROCNO"), seen=sorted(seen),
                  cwd=os.getcwd())
    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out_dir / f"rank-{rank}.json", json.dumps(record, indent=1, sort_keys=True))
    end = time.monotonic() + sleep
    while time.monotonic() < end:
        time.sleep(0.2)
    return exit_code if fail_rank == rank else 0
