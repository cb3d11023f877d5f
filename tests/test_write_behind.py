"""Cache mode's write-behind lane (agent/links.py, docs/coherence.md "Write-behind" and
"Cancelled before sent"): write-backs wait a moment before they are sent, and a name made
and removed before its write-backs were sent costs the node nothing.  Real node on
loopback, real programs under `ferry run`; what reached the node is read from its export
and from its request counts (STATS)."""

from __future__ import annotations

import os

from conftest import MOUNT_PREFIX, ferry_run, node_stats

M = MOUNT_PREFIX
MUTATIONS = {"PUT", "OPEN", "WRITE", "MKDIR", "SYMLINK", "LINK", "RENAME", "UNLINK", "RMDIR", "SETATTR", "TRUNCATE"}


def _run(node, script: str):
    return ferry_run(["sh", "-c", script], mounts=(f"{M}={node.url}",))


def _sent(node) -> dict[str, int]:
    return {op: n for op, n in node_stats(node)["requests"].items() if op in MUTATIONS and n}


def test_a_tree_made_and_removed_within_a_run_never_reaches_the_node(node):
    """mkdir, files, a symlink, chmod and truncate, then `rm -r`: none of it is sent."""
    node_stats(node, reset=True)
    _run(node, f"mkdir {M}/t && for i in 1 2 3 4 5; do echo $i > {M}/t/f$i; done && ln -s f1 {M}/t/s && "
               f"chmod 600 {M}/t/f2 && : > {M}/t/f3 && echo tmp > {M}/scratch && rm {M}/scratch && rm -r {M}/t")
    assert sorted(p.name for p in node.root.iterdir()) == []
    assert _sent(node) == {}


def test_a_hard_link_keeps_the_file_whose_first_name_was_removed(node):
    """The upload's inode has another name: nothing is cancelled, the link holds the bytes."""
    _run(node, f"echo data > {M}/a && ln {M}/a {M}/b && rm {M}/a")
    assert sorted(p.name for p in node.root.iterdir()) == ["b"]
    assert (node.root / "b").read_text() == "data\n"


def test_renames_before_a_removal_are_sent_in_order(node):
    """A rename names the file under two names: the chain is sent as made, and the end
    state is the program's (a file moved out of a directory that is then removed stays)."""
    _run(node, f"mkdir {M}/d && echo kept > {M}/d/f && mv {M}/d/f {M}/g && rm -r {M}/d && "
               f"echo x > {M}/h && mv {M}/h {M}/i && rm {M}/i")
    assert sorted(p.name for p in node.root.iterdir()) == ["g"]
    assert (node.root / "g").read_text() == "kept\n"


def test_removing_a_file_the_node_had_is_sent_after_its_rewrite(node):
    """A file that exists on the node is not one made here: its rewrite may be dropped or
    sent, but its removal always reaches the node."""
    (node.root / "old").write_text("node's\n")
    (node.root / "keep").write_text("node's\n")
    _run(node, f"echo mine > {M}/old && rm {M}/old && echo mine > {M}/keep")
    assert sorted(p.name for p in node.root.iterdir()) == ["keep"]
    assert (node.root / "keep").read_text() == "mine\n"


def test_a_rewrite_racing_the_queued_upload_ends_with_the_last_bytes(node):
    """Rewritten many times within the write-behind time, the node ends with the last."""
    _run(node, f"for i in $(seq 1 40); do echo v$i > {M}/f; done; echo tail >> {M}/f")
    assert (node.root / "f").read_text() == "v40\ntail\n"


def test_a_closed_file_reaches_the_node_without_a_sync_while_the_program_runs(node):
    """Write-behind only delays: the program, still running, sees its closed file appear in
    the export (read there directly, not through ferry) within a few seconds."""
    seen = node.root / "f"
    p = _run(node, f"echo hi > {M}/f; i=0; while [ ! -s {seen} ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done; "
                   f"[ -s {seen} ] && echo seen after $i")
    assert p.stdout.startswith("seen after "), p.stdout + p.stderr
    assert seen.read_text() == "hi\n"


def test_a_file_never_read_here_renamed_or_linked_reads_the_nodes_bytes(node):
    """The replica holds a placeholder (a hole of the right size) for a file not fetched;
    renamed or hard-linked before the change is sent, its new name's open sends the change
    and fetches — never the hole."""
    (node.root / "f").write_text("node's bytes\n")
    (node.root / "g").write_text("other bytes\n")
    p = _run(node, f"ls -l {M} >/dev/null && mv {M}/f {M}/f2 && cat {M}/f2 && ln {M}/g {M}/g2 && cat {M}/g2")
    assert p.stdout == "node's bytes\nother bytes\n"
    assert sorted(p.name for p in node.root.iterdir()) == ["f2", "g", "g2"]


def test_statfs_of_names_made_or_removed_but_not_sent_answers_as_the_programs_tree(node):
    """statfs does not wait for queued changes; a name they make exists, one they remove
    does not (fts calls statfs on every directory `rm -r` walks)."""
    (node.root / "old").write_text("x\n")
    script = (f"import os\nos.mkdir('{M}/d'); open('{M}/d/f', 'w').close(); os.unlink('{M}/old')\n"
              f"print(os.statvfs('{M}/d').f_bsize > 0, os.statvfs('{M}/d/f').f_blocks > 0)\n"
              f"for p in ('{M}/old', '{M}/d/none'):\n"
              f"    try: os.statvfs(p); print('found', p)\n"
              f"    except FileNotFoundError: print('ENOENT')\n")
    p = ferry_run(["python3", "-c", script], mounts=(f"{M}={node.url}",))
    assert p.stdout.split() == ["True", "True", "ENOENT", "ENOENT"], p.stdout + p.stderr


def test_times_and_mode_set_after_close_ride_on_the_queued_upload(node):
    """tar and rsync close a file, then set its times and mode: the upload, not sent yet,
    carries them (no SETATTR is sent), exactly as set, atime included."""
    script = (f"import os\nfor i in range(20):\n"
              f"    p = '{M}/f%d' % i\n    open(p, 'w').write('x' * i)\n"
              f"    os.utime(p, ns=(1_000_000_000_123 + i, 2_000_000_000_456 + i)); os.chmod(p, 0o640)\n")
    node_stats(node, reset=True)
    ferry_run(["python3", "-c", script], mounts=(f"{M}={node.url}",))
    for i in range(20):
        st = os.stat(node.root / f"f{i}")
        assert (st.st_atime_ns, st.st_mtime_ns, st.st_mode & 0o777, st.st_size) == \
            (1_000_000_000_123 + i, 2_000_000_000_456 + i, 0o640, i)
    assert _sent(node) == {"PUT": 20}
