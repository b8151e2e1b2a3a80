"""The fresh-clone set-up: `make train` installs with pip only; the test-only extras (Chromium, a CJK font) are
`make test`'s, and a package manager that stays busy makes them skip with a message, never fail."""
import os
import stat
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make_dry_run(target: str) -> str:
    return subprocess.run(["make", "-n", "-B", target], cwd=REPO, capture_output=True, text=True, check=True).stdout


def test_make_train_runs_no_apt_and_make_test_installs_the_browser_extras():
    train = make_dry_run("train")
    assert "install-test-extras" not in train and "apt-get" not in train
    assert ".ci/install-env.sh" in train and "dev" not in train.split("install-env.sh", 1)[1].splitlines()[0]
    assert "apt-get" not in (REPO / ".ci/install-env.sh").read_text()
    test = make_dry_run("test")
    assert "bash .ci/install-test-extras.sh" in test and "dev,deepspeed,ui" in test


def test_busy_apt_skips_the_test_extras_with_a_message(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    calls = tmp_path / "calls"
    # apt-get that reports the dpkg lock as held after its (bounded) wait; fc-list that finds no CJK font.
    (fake / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n'
                                  'echo "E: Could not get lock /var/lib/dpkg/lock-frontend" >&2\nexit 100\n')
    (fake / "fc-list").write_text("#!/bin/sh\nexit 0\n")
    (fake / "id").write_text("#!/bin/sh\necho 0\n")
    for f in fake.iterdir():
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}", "LAUNCHER_CHROMIUM": str(tmp_path / "none"),
           "APT_LOCK_WAIT": "7"}
    done = subprocess.run(["bash", str(REPO / ".ci/install-test-extras.sh")], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "skipped" in done.stdout and "chromium fonts-wqy-microhei" in done.stdout
    assert "DPkg::Lock::Timeout=7" in calls.read_text()
