"""Shared fixtures: a real MLflow tracking server on 127.0.0.1 (started once per session)."""
import fcntl
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
import torch

# The cpu generation grid trains its tokenizers on Fashion-MNIST (sweeps/generation.py CPU_TOKENIZER); where
# apt could not install it (.ci/run) its tests skip with this reason instead of failing on the data.
needs_fashion_mnist = pytest.mark.skipif(
    not os.path.exists("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"),
    reason="dataset-fashion-mnist not installed (make datasets): the cpu generation grid trains on it")

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # `sweeps`, `slurm`, `analysis` are top-level dirs of the repo, not installed
torch.set_num_threads(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MLflowServer:
    """`mlflow server` in its own process group, so stopping it also stops its uvicorn/huey workers."""

    def __init__(self, root: str, port: int | None = None):
        self.root, self.port = root, port or free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc = None

    def start(self, timeout: float = 90) -> "MLflowServer":
        mlflow_bin = os.path.join(os.path.dirname(sys.executable), "mlflow")
        self.log = open(os.path.join(self.root, f"mlflow-server-{self.port}.log"), "a")
        self.proc = subprocess.Popen(
            [mlflow_bin, "server", "--backend-store-uri", f"sqlite:///{self.root}/mlflow.db",
             "--artifacts-destination", f"{self.root}/artifacts", "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(self.uri + "/health", timeout=2) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.5)
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited; see {self.log.name}")
        raise RuntimeError(f"mlflow server did not answer /health within {timeout}s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    server = MLflowServer(str(tmp_path_factory.mktemp("mlflow"))).start()
    yield server
    server.stop()


CLUSTER_LOCK = os.environ.get("FVQ_SLURM_TEST_LOCK", "/tmp/fvq-slurm-tests.lock")
CLUSTER_LOCK_WAIT_S = 1800


def _hold_cluster_lock() -> None:
    """One test session at a time on this machine's Slurm dev cluster: another session (a second checkout's
    `make test`) would stop or restart the daemons under this one's jobs. Held until this process exits."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or str(os.getpid())  # shared by this session's workers
    owner = CLUSTER_LOCK + ".owner"
    f = open(CLUSTER_LOCK, "a")
    t0 = time.monotonic()
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with open(owner, "w") as o:
                o.write(run)
            break
        except BlockingIOError:
            try:
                with open(owner) as o:
                    if o.read() == run:  # another worker of this same session holds it: never wait on ourselves
                        break
            except OSError:
                pass
            if time.monotonic() - t0 > CLUSTER_LOCK_WAIT_S:
                pytest.fail(f"another test session held {CLUSTER_LOCK} for {CLUSTER_LOCK_WAIT_S} s", pytrace=False)
            time.sleep(1)
    if time.monotonic() - t0 > 1:
        print(f"\nwaited {time.monotonic() - t0:.0f}s for another session's Slurm tests", flush=True)
    _hold_cluster_lock.file = f  # kept open: the lock lives as long as this process


@pytest.fixture(scope="session")
def slurm_cluster():
    """The real single-node Slurm dev cluster (slurm/dev-cluster/start.sh), with fake A100 GRES.

    Skipped only when the machine cannot have it (not root, no apt). Stopped at the end if this session
    started it, unless FVQ_KEEP_SLURM=1.
    """
    from slurm.devcluster import DevCluster, DevClusterError

    if os.geteuid() != 0:
        pytest.skip("the Slurm dev cluster needs root (apt-get install, daemons)")
    _hold_cluster_lock()
    cluster = DevCluster()
    was_up = cluster.is_up()
    t0 = time.monotonic()
    try:
        line = cluster.start()
    except DevClusterError as e:
        if e.cannot_install:
            pytest.skip(f"no Slurm dev cluster on this machine: {e}")
        raise
    print(f"\n{line} ({time.monotonic() - t0:.1f}s)", flush=True)
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)  # submitit runs sbatch/sacct/scontrol with this process's environment
    yield cluster
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    if not was_up and os.environ.get("FVQ_KEEP_SLURM") != "1":
        cluster.stop()


SERIAL_FILES = ("test_slurm_cluster.py", "test_slurm_sweeps.py")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers), every test that touches the one Slurm dev cluster
    of this machine goes to the same worker (``--dist loadgroup``): a second worker would start, restart
    or stop the same daemons under the first one's jobs. tryfirst: xdist's worker reads the marks in its own
    hook of the same name, which pluggy would otherwise call before this one (it is registered later)."""
    for item in items:
        if "slurm_cluster" in getattr(item, "fixturenames", ()) or item.path.name in SERIAL_FILES:
            item.add_marker(pytest.mark.xdist_group("slurm"))
