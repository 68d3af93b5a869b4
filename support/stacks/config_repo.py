"""The declarative configuration repository an embedded or compose stack starts from."""
from __future__ import annotations

import fcntl
import subprocess
from pathlib import Path

import yaml
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_exponential

GATEWAY_SETTINGS = {"self_heal": False, "prune": False, "reconcile_interval_seconds": 0.5}


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(repo), "-c", "user.name=Acceptance Suite",
                           "-c", "user.email=suite@acceptance.test", *args],
                          capture_output=True, text=True, check=True)
    return done.stdout.strip()


def create(path: Path, stub_url: str) -> Path:
    """A fresh repository whose first commit declares the gateway's settings and one model on the stub."""
    path.mkdir(parents=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(path)], check=True)
    (path / "gateway.yaml").write_text(yaml.safe_dump(GATEWAY_SETTINGS, sort_keys=False))
    (path / "models").mkdir()
    (path / "models" / "echo-small.yaml").write_text(yaml.safe_dump({
        "price": {"prompt_per_1k_micros": 1000, "completion_per_1k_micros": 2000},
        "backends": [{"name": "stub-primary", "url": f"{stub_url}/v1/chat/completions"}],
    }, sort_keys=False))
    (path / "orgs").mkdir()
    (path / "orgs" / ".keep").write_text("")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "Initial gateway configuration")
    return path


class RepoUnusable(AssertionError):
    pass


def _git_dir(repo: Path) -> Path:
    return Path(git(repo, "rev-parse", "--absolute-git-dir"))


def commit(repo: Path, changes: dict[str, str | None], message: str) -> str:
    """Write (text) or delete (None) files and commit them on the checked-out branch, as an operator would; the sha.

    Several behave processes may commit to one repository at once: each commit holds an exclusive flock on
    `<git dir>/acceptance-commit.lock` from the first write to the commit, so two commits never mix their files
    or race for git's own index lock, and a failed attempt (say a stale index.lock) is retried a few times."""
    repo = Path(repo)
    try:
        if git(repo, "rev-parse", "--is-bare-repository") == "true":
            raise RepoUnusable(f"{repo} is a bare repository; point config_repo at a working copy the gateway reads")
        lock_path = _git_dir(repo) / "acceptance-commit.lock"
    except subprocess.CalledProcessError as exc:
        raise RepoUnusable(f"{repo} is not a git repository the suite can commit to: {exc.stderr.strip()}") from None
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            for attempt in Retrying(stop=stop_after_attempt(5), wait=wait_exponential(multiplier=0.05, max=1),
                                    retry=retry_if_exception_type(subprocess.CalledProcessError), reraise=True):
                with attempt:
                    return _write_and_commit(repo, changes, message)
        except subprocess.CalledProcessError as exc:
            raise RepoUnusable(f"committing to {repo} failed: {' '.join(exc.cmd[-3:])}: "
                               f"{(exc.stderr or '').strip()}") from None
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _write_and_commit(repo: Path, changes: dict[str, str | None], message: str) -> str:
    for relative, text in changes.items():
        target = repo / relative
        if text is None:
            target.unlink(missing_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    git(repo, "add", "-A", "--", *changes)
    git(repo, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def is_ancestor(repo: Path, ancestor: str, descendant: str | None) -> bool:
    """True when `descendant` is `ancestor` or one of its descendants (False for a revision the repo lacks)."""
    if not descendant:
        return False
    done = subprocess.run(["git", "-C", str(repo), "merge-base", "--is-ancestor", ancestor, descendant],
                          capture_output=True, text=True)
    return done.returncode == 0


def read_head(repo: Path, relative: str) -> str | None:
    """A file's text at the branch head (None when absent)."""
    done = subprocess.run(["git", "-C", str(repo), "show", f"HEAD:{relative}"], capture_output=True, text=True)
    return done.stdout if done.returncode == 0 else None
