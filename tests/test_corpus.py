"""A corpus of real builds and tools on ferry paths, each compared with the same run on a
local directory.

Projects and tools made elsewhere, fetched from the package registries by
scripts/fetch-corpus.sh into ${FERRY_CORPUS_DIR:-~/.cache/ferry/corpus} (never from the
network here): GNU hello (autotools: autoreconf -ifs, configure, make, make check, make
install DESTDIR=), cJSON (CMake, out-of-tree build dir), markupsafe (pip install of an sdist
with a C extension into a venv on ferry, pip wheel), an npm tree (npm ci --offline, tools
from node_modules/.bin), git (clone of a local bare repository, gc, fsck), more-itertools
(compileall and its own pytest suite), tar of /usr/include onto ferry and back, rsync -aHX
with hard links, symlinks and user xattrs.

Each item runs in both data modes (cache, direct) through a mount (the ORFA form's ':' is
refused by configure, venv and PATH), and under bash and dash where a shell runs the build
(CONFIG_SHELL, make SHELL=). The default run is the short one (CI): the builds under one
shell per mode and /usr/include/linux only. `FERRY_CORPUS=full` runs every combination and the
whole of /usr/include:

    FERRY_CORPUS=full PYTHONPATH=$PWD/src python -m pytest -q -p no:cacheprovider tests/test_corpus.py
    python scripts/corpus-table.py

Each case's time (and the local run's) goes to $FERRY_CORPUS_RESULTS, by default
bench/results/corpus.json in a full run and a file in pytest's temporary directory otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import pytest
from conftest import MOUNT_PREFIX, ferry_env, ferry_run

REPO = Path(__file__).resolve().parents[1]
CORPUS = Path(os.environ.get("FERRY_CORPUS_DIR") or Path.home() / ".cache" / "ferry" / "corpus")
FULL = os.environ.get("FERRY_CORPUS") == "full"
IN_CI = os.environ.get("CI") == "true"
PY = sys.executable
SHELLS = ["bash", "dash"]
MODES = ["cache", "direct"]

RESULTS: list[dict] = []


def need(*parts: str) -> Path:
    """The corpus item's directory: a failure in CI, a skip elsewhere when it was not fetched."""
    d = CORPUS.joinpath(*parts)
    if not (d / ".done").exists():
        msg = f"corpus item {d} missing: run `bash scripts/fetch-corpus.sh`"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return d


def only(pattern: str, d: Path) -> Path:
    found = sorted(d.glob(pattern))
    assert len(found) == 1, f"{pattern} in {d}: {found}"
    return found[0]


@pytest.fixture(scope="module", autouse=True)
def _write_results(tmp_path_factory):
    yield
    out = os.environ.get("FERRY_CORPUS_RESULTS")
    path = Path(out) if out else (REPO / "bench" / "results" / "corpus.json" if FULL
                                  else tmp_path_factory.getbasetemp() / "corpus.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"full": FULL, "results": RESULTS}, indent=1) + "\n")


# ---------------------------------------------------------------- comparing trees


def is_elf(p: Path) -> bool:
    with open(p, "rb") as f:
        return f.read(4) == b"\x7fELF"


def listing(root: Path, contents: bool = True, skip=lambda rel: False) -> dict[str, tuple]:
    """Every name below root: type, permission bits, symlink target, and (contents) a hash of
    a regular file's bytes ("elf" for a binary, which holds its build directory's path)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if skip(rel):
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("l", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("d", stat.S_IMODE(st.st_mode))
            elif not contents:
                out[rel] = ("f", stat.S_IMODE(st.st_mode))
            else:
                h = "elf" if is_elf(p) else hashlib.sha256(p.read_bytes()).hexdigest()
                out[rel] = ("f", stat.S_IMODE(st.st_mode), h)
    return out


def diff_dicts(a: dict, b: dict) -> list[str]:
    """What differs, in a few lines an assertion can show."""
    lines = [f"only local: {k}" for k in sorted(set(a) - set(b))]
    lines += [f"only ferry: {k}" for k in sorted(set(b) - set(a))]
    lines += [f"differs: {k}: {a[k]} != {b[k]}" for k in sorted(set(a) & set(b)) if a[k] != b[k]]
    return lines[:40]


# ---------------------------------------------------------------- running a case


class Item:
    """One corpus item: a script run in a work directory W by a shell, and what of its result
    is compared (`collect(work_dir_on_disk, stdout)`)."""

    name = ""
    shell = False  # whether the shell under test drives it (then it runs under bash and dash)
    timeout = 600

    def script(self, w: str, shell: str) -> str:
        raise NotImplementedError

    def collect(self, w: Path, out: str) -> dict:
        return {"out": out}


LOCAL: dict[tuple[str, str], tuple[dict, float]] = {}


def normalize(out: str, w: str) -> str:
    return out.replace(w, "W")


def run_local(item: Item, shell: str, tmp_path_factory) -> tuple[dict, float]:
    key = (item.name, shell)
    if key not in LOCAL:
        w = tmp_path_factory.mktemp(f"local-{item.name}-{shell}")
        t = time.monotonic()
        p = subprocess.run([shell, "-c", item.script(str(w), shell)], capture_output=True, text=True,
                           env=ferry_env(), timeout=item.timeout, check=False)
        secs = time.monotonic() - t
        assert p.returncode == 0, f"local run of {item.name} exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
        LOCAL[key] = (item.collect(w, normalize(p.stdout, str(w))), secs)
    return LOCAL[key]


def run_case(item: Item, mode: str, shell: str, node, tmp_path_factory) -> None:
    want, local_secs = run_local(item, shell, tmp_path_factory)
    disk = node.root / "w"
    disk.mkdir(parents=True)
    w = f"{MOUNT_PREFIX}/w"
    rec = {"item": item.name, "mode": mode, "shell": shell if item.shell else "-", "pass": False,
           "seconds": None, "local_seconds": round(local_secs, 2), "xfail": XFAIL.get(item.name)}
    RESULTS.append(rec)
    t = time.monotonic()
    p = ferry_run([shell, "-c", item.script(w, shell)], mode=mode, mounts=(f"{MOUNT_PREFIX}={node.url}",),
                  timeout=item.timeout, check=False)
    rec["seconds"] = round(time.monotonic() - t, 2)
    assert p.returncode == 0, (f"{item.name} on ferry exited {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
                               + "".join(f"\n--- {log.name}:\n{log.read_text(errors='replace')[-3000:]}"
                                         for log in sorted(disk.glob("*.log"))))
    got = item.collect(disk, normalize(p.stdout, w))
    for k in want:
        if isinstance(want[k], dict):
            assert got[k] == want[k], f"{item.name}: {k}:\n" + "\n".join(diff_dicts(want[k], got[k]))
        else:
            assert got[k] == want[k], f"{item.name}: {k}"
    rec["pass"] = True


# ---------------------------------------------------------------- the items


class Autotools(Item):
    """GNU hello from its Debian source package: autoreconf -ifs (links into
    /usr/share/automake-*: out of the export, followed on the client), configure, make,
    make check, make install DESTDIR= onto ferry; the shell under test runs all of it."""

    name, shell = "autotools-hello", True

    def script(self, w, shell):
        src = only("hello_*.orig.tar.gz", need("debian", "hello"))
        sh = f"/bin/{shell}"
        return f"""set -e
            cd {w} && tar xzf {src} && cd hello-*/
            autoreconf -ifs >{w}/autoreconf.log 2>&1
            CONFIG_SHELL={sh} {sh} ./configure -q --prefix=/usr >{w}/configure.log 2>&1
            make -j2 SHELL={sh} >{w}/make.log 2>&1
            make check SHELL={sh} >{w}/check.log 2>&1
            make install SHELL={sh} DESTDIR={w}/dest >{w}/install.log 2>&1
            grep -E '^# (TOTAL|PASS|FAIL|ERROR)' {w}/check.log
            {w}/dest/usr/bin/hello; {w}/dest/usr/bin/hello -g 'on ferry'
            readlink build-aux/install-sh
        """

    def collect(self, w, out):
        tree = only("hello-*", w)
        return {"out": out, "dest": listing(w / "dest"), "config.h": (tree / "config.h").read_text(),
                "tree": listing(tree, contents=False)}


class CMake(Item):
    """cJSON from its Debian source package: cmake with the build dir out of the source tree
    (both on ferry), make, make install DESTDIR=; the -ctest variant also runs its tests."""

    shell = True

    def __init__(self, ctest: bool = False):
        self.ctest = ctest
        self.name = "cmake-cjson-ctest" if ctest else "cmake-cjson"

    def script(self, w, shell):
        src = only("cjson_*.orig.tar.gz", need("debian", "cjson"))
        sh = f"/bin/{shell}"
        test = "ctest 2>&1 | grep 'tests passed'" if self.ctest else ""
        return f"""set -e
            cd {w} && tar xzf {src} && mkdir build && cd build
            cmake ../cJSON-* -DCMAKE_INSTALL_PREFIX=/usr -DENABLE_CJSON_UTILS=On -DENABLE_CJSON_TEST=On >{w}/cmake.log
            make -j2 SHELL={sh} >{w}/make.log
            {test}
            make install SHELL={sh} DESTDIR={w}/dest >{w}/install.log
        """

    def collect(self, w, out):
        log = w / "build" / "Testing" / "Temporary" / "LastTest.log"
        if self.ctest and "error while loading shared libraries" in log.read_text(errors="replace"):
            raise KnownFailure(XFAIL[self.name])
        return {"out": out, "dest": listing(w / "dest"),
                "build": listing(w / "build", contents=False, skip=lambda rel: rel.startswith("Testing"))}


class KnownFailure(AssertionError):
    """The failure an xfail case names, seen: any other failure of that case still fails."""


# A known failure of ferry's, with its cause (see the README's Corpus section).
XFAIL = {
    "cmake-cjson-ctest": "the dynamic loader opens a program's DT_NEEDED libraries with its own internal calls, "
                         "before any hook: a test binary whose RUNPATH is the ferry build dir (/mnt/x/w/build, "
                         "libcjson.so.1 there) cannot start (ld.so: cannot open shared object file)",
}


class Pip(Item):
    """A venv on ferry (pip from ensurepip), setuptools and wheel from local wheels, then the
    markupsafe sdist unpacked in a ferry dir: pip install --no-build-isolation (its C
    extension compiled in the tree), import it, and pip wheel into a ferry dir."""

    name, shell = "pip-markupsafe", False

    def script(self, w, shell):
        d = need("pypi")
        sdist = only("markupsafe-*.tar.gz", d)
        pip = f"{w}/venv/bin/python -m pip -q --disable-pip-version-check"
        return f"""set -e
            {PY} -m venv {w}/venv
            {pip} install --no-index --find-links {d} setuptools wheel
            mkdir {w}/src && tar xzf {sdist} -C {w}/src
            {pip} install --no-index --no-build-isolation {w}/src/markupsafe-*
            {w}/venv/bin/python -c 'import markupsafe, markupsafe._speedups as s; print(markupsafe.escape("<a>&"), s.__file__)'
            {pip} wheel --no-index --no-build-isolation --no-deps -w {w}/wheels {w}/src/markupsafe-*
        """

    def collect(self, w, out):
        site = only("venv/lib/python*/site-packages", w)
        wheel = only("wheels/*.whl", w)
        with zipfile.ZipFile(wheel) as z:
            members = sorted(z.namelist())
        return {"out": out, "wheel": (wheel.name, members),
                "site": listing(site, contents=False, skip=lambda rel: "__pycache__" in rel or
                                not rel.lower().startswith("markupsafe"))}


class Npm(Item):
    """npm ci --offline of a small dependency tree (the lock file and the npm cache were
    fetched before) into a ferry dir, then the tools through node_modules/.bin's links."""

    name, shell = "npm-tree", False

    def script(self, w, shell):
        d = need("npm")
        return f"""set -e
            mkdir {w}/app && cp {d}/project/package.json {d}/project/package-lock.json {w}/app/ && cd {w}/app
            npm ci --offline --no-audit --no-fund --cache "$NPM_CACHE" >{w}/npm.log 2>&1
            ./node_modules/.bin/semver 1.2.3 -i minor
            printf '{{a: 1, b: [2,],}}' > x.json5 && ./node_modules/.bin/json5 x.json5
            ./node_modules/.bin/node-which -a sh | head -1
            ./node_modules/.bin/rimraf node_modules/json5 && ls node_modules | tr '\\n' ' '
        """

    def collect(self, w, out):
        return {"out": out, "modules": listing(w / "app" / "node_modules", skip=lambda rel: rel.startswith(".package-lock"))}


class Git(Item):
    """git clone of a local bare repository onto ferry (the local form, whose objects are
    copied, and file://, which sends a pack), git gc, git fsck."""

    name, shell = "git", False

    def script(self, w, shell):
        bare = bare_repo()
        return f"""set -e
            git clone -q {bare} {w}/c1 && git clone -q --no-local file://{bare} {w}/c2
            for c in c1 c2; do
              cd {w}/$c && git rev-parse HEAD && git log --oneline | wc -l
              git gc -q && git fsck --full --strict 2>&1 && git count-objects -v | grep -E '^(count|packs)'
              git status --porcelain && git ls-files -s | md5sum
            done
        """

    def collect(self, w, out):
        return {"out": out, "files": listing(w / "c1", skip=lambda rel: rel.startswith(".git"))}


class PyTree(Item):
    """The more-itertools sdist unpacked on ferry: python -m compileall, then its own tests."""

    name, shell = "python-more-itertools", False

    def script(self, w, shell):
        sdist = only("more-itertools-*.tar.gz", need("pypi"))
        return f"""set -e
            cd {w} && tar xzf {sdist} && cd more-itertools-*/
            {PY} -m compileall -q more_itertools tests
            {PY} -m pytest -q -p no:cacheprovider tests 2>&1 | tail -1 | sed 's/ in [0-9.]*s.*//'
        """

    def collect(self, w, out):
        return {"out": out, "tree": listing(only("more-itertools-*", w), contents=False)}


class Tar(Item):
    """tar c of /usr/include (its linux/ part in the short run) onto ferry, x on ferry, c back
    from ferry: both archives equal the local ones byte for byte."""

    name, shell = "tar-usr-include", False
    part = "include" if FULL else "include/linux"

    def script(self, w, shell):
        return f"""set -e
            tar --sort=name -C /usr -cf {w}/a.tar {self.part}
            mkdir {w}/x && tar -C {w}/x -xf {w}/a.tar
            tar --sort=name -C {w}/x -cf {w}/back.tar {self.part}
            cmp {w}/a.tar {w}/back.tar && echo same
        """

    def collect(self, w, out):
        return {"out": out, "a.tar": hashlib.sha256((w / "a.tar").read_bytes()).hexdigest(),
                "back.tar": hashlib.sha256((w / "back.tar").read_bytes()).hexdigest()}


def xattr_tree(root: Path) -> None:
    """Files with hard links (one in a sibling dir), symlinks and user xattrs."""
    (root / "a" / "deep").mkdir(parents=True)
    (root / "b").mkdir()
    (root / "a" / "f").write_bytes(os.urandom(5000))
    os.link(root / "a" / "f", root / "a" / "f-link")
    os.link(root / "a" / "f", root / "b" / "f-sibling")
    (root / "a" / "deep" / "g").write_text("g\n" * 1000)
    os.link(root / "a" / "deep" / "g", root / "g-top")
    os.symlink("../a/f", root / "b" / "rel-link")
    os.symlink("/usr/share/dict", root / "abs-link")
    os.symlink("nowhere", root / "a" / "dangling")
    os.setxattr(root / "a" / "f", "user.color", b"blue")
    os.setxattr(root / "a" / "deep" / "g", "user.big", bytes(range(256)) * 8)
    os.setxattr(root / "b", "user.dir", b"yes")
    os.chmod(root / "a" / "deep", 0o750)


class Rsync(Item):
    """rsync -aHX of a tree with hard links, symlinks and user xattrs onto ferry and back;
    rsync -n -i -aHX --checksum then finds nothing to change."""

    name, shell = "rsync-aHX", False

    def script(self, w, shell):
        src = corpus_tmp() / "rsync-src"
        if not src.exists():
            xattr_tree(src)
        return f"""set -e
            rsync -aHX {src}/ {w}/r/ && rsync -aHX {w}/r/ {w}/back/
            rsync -n -i -aHX --checksum {src}/ {w}/r/; rsync -n -i -aHX --checksum {w}/r/ {w}/back/
            rsync -n -i -aHX --checksum {src}/ {w}/back/; echo checked
        """

    def collect(self, w, out):
        res = {"out": out}
        for side in ("r", "back"):
            root = w / side
            files = listing(root)
            inodes: dict[int, list[str]] = {}
            xattrs = {}
            for rel in files:
                st = os.lstat(root / rel)
                if stat.S_ISREG(st.st_mode):
                    inodes.setdefault(st.st_ino, []).append(rel)
                if not stat.S_ISLNK(st.st_mode):
                    xattrs[rel] = sorted((k, os.getxattr(root / rel, k)) for k in os.listxattr(root / rel)
                                         if k.startswith("user."))
            res[side] = files
            res[side + "-links"] = sorted(sorted(v) for v in inodes.values())
            res[side + "-xattrs"] = xattrs
        return res


_TMP: list[Path] = []


def corpus_tmp() -> Path:
    if not _TMP:
        _TMP.append(Path(tempfile.mkdtemp(prefix="ferry-corpus-")))
    return _TMP[0]


def bare_repo() -> Path:
    """A bare repository made locally from the more-itertools sdist in three commits."""
    bare = corpus_tmp() / "repo.git"
    if bare.exists():
        return bare
    sdist = only("more-itertools-*.tar.gz", need("pypi"))
    work = corpus_tmp() / "repo-work"
    work.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="c", GIT_AUTHOR_EMAIL="c@example.invalid", GIT_COMMITTER_NAME="c",
               GIT_COMMITTER_EMAIL="c@example.invalid", GIT_AUTHOR_DATE="1700000000 +0000",
               GIT_COMMITTER_DATE="1700000000 +0000")
    script = f"""set -e
        cd {work} && git init -q -b main . && tar xzf {sdist} --strip-components=1
        git add docs && git commit -qm docs && git add more_itertools && git commit -qm code
        git add -A && git commit -qm rest && git clone -q --bare . {bare}
    """
    subprocess.run(["sh", "-c", script], check=True, env=env, timeout=120, capture_output=True)
    return bare


@pytest.fixture(scope="module", autouse=True)
def _clean_corpus_tmp():
    yield
    for d in _TMP:
        shutil.rmtree(d, ignore_errors=True)
    _TMP.clear()


# ---------------------------------------------------------------- the matrix

ITEMS = [Autotools(), CMake(), CMake(ctest=True), Pip(), Npm(), Git(), PyTree(), Tar(), Rsync()]
# the short run's one shell per mode for the shell-driven builds
SHORT = {("autotools-hello", "cache", "bash"), ("autotools-hello", "direct", "dash"),
         ("cmake-cjson", "cache", "dash"), ("cmake-cjson", "direct", "bash"),
         ("cmake-cjson-ctest", "cache", "bash"), ("cmake-cjson-ctest", "direct", "dash")}


def cases():
    for item in ITEMS:
        for mode in MODES:
            for shell in (SHELLS if item.shell else ["bash"]):
                short = not item.shell or (item.name, mode, shell) in SHORT
                marks = [] if short or FULL else [pytest.mark.skip(reason="in the full corpus run: FERRY_CORPUS=full")]
                if item.name in XFAIL:
                    marks.append(pytest.mark.xfail(strict=True, raises=KnownFailure, reason=XFAIL[item.name]))
                yield pytest.param(item, mode, shell, marks=marks,
                                   id=f"{item.name}-{mode}" + (f"-{shell}" if item.shell else ""))


@pytest.mark.parametrize("item,mode,shell", list(cases()))
def test_corpus(item: Item, mode: str, shell: str, node, tmp_path_factory, monkeypatch):
    if isinstance(item, Npm):
        # the npm cache is copied for each run: npm writes its index and logs there
        cache = tmp_path_factory.mktemp("npm-cache")
        shutil.copytree(need("npm") / "cache", cache, dirs_exist_ok=True)
        monkeypatch.setenv("NPM_CACHE", str(cache))
    run_case(item, mode, shell, node, tmp_path_factory)
