"""The release gateway run under callgrind against the instant fake worker.

Shared by the scripts that count what the gateway executes:
scripts/bench-instructions (instructions per completion) and
scripts/symbol-order (which functions run, for the code layout). Both need
the release gateway and examples, built as scripts/bench builds them.
"""

import glob
import http.client
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELEASE = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")) + "/release"
FAKE_WORKER = os.path.join(RELEASE, "examples", "fake_worker")


def profile(who, gateway, port, scratch, env, workload, valgrind_args=()):
    """Runs `gateway` under callgrind until `workload(port)` returns.

    `env` is added to the gateway's environment (which has RUST_LOG
    removed, a loopback port, its own working and state directories and the
    fake worker as CODEX_BIN). The gateway is stopped with SIGTERM, so its
    shutdown is in the profile too. Returns the profile's path; exits with a
    message naming `who` if the gateway does not get ready or callgrind
    writes no profile.
    """
    out = os.path.join(scratch, f"callgrind.{port}.out")
    for f in glob.glob(out + "*"):
        os.remove(f)
    work = os.path.join(scratch, f"work-{port}")
    os.makedirs(work, exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    full_env.update(
        PORT=str(port),
        PROXY_HOST="127.0.0.1",
        PROXY_CODEX_WORKDIR=work,
        PROXY_STATE_DIR=os.path.join(work, "state"),
        CODEX_BIN=FAKE_WORKER,
    )
    full_env.update(env)
    log = os.path.join(work, "gateway.log")
    with open(log, "w") as log_file:
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", *valgrind_args, f"--callgrind-out-file={out}", gateway],
            env=full_env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            wait_ready(who, proc, port, log)
            workload(port)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=300)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    if not os.path.exists(out):
        sys.exit(f"{who}: callgrind wrote no profile (see {log})")
    return out


def wait_ready(who, proc, port, log):
    deadline = time.time() + 120
    while True:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/readyz")
            r = c.getresponse()
            r.read()
            if r.status == 200:
                return
        except OSError:
            pass
        if time.time() > deadline or proc.poll() is not None:
            sys.exit(f"{who}: the gateway did not get ready (see {log})")
        time.sleep(0.2)
