"""Which names are ferry's: the shim tells most local names by their first bytes (path.c,
fy_resolve), so names that share only a beginning with a mount prefix or "/REMOTE@"
must stay local, and every ferry form must still reach the node."""

from __future__ import annotations

import pytest
from conftest import MODES, ferry_run


@pytest.mark.parametrize("mode", MODES)
def test_names_near_a_prefix_stay_local_and_ferry_names_reach_the_node(node, tmp_path, mode):
    (node.root / "f").write_text("node\n")
    (node.root / "d").mkdir()
    (node.root / "d" / "g").write_text("node-g\n")
    local = tmp_path / "loc"
    local.mkdir()
    (local / "f").write_text("local\n")
    # /mnt/x and /q/y: one prefix shares its second byte with nothing local here, the other
    # ("/m...") with names such as /mnt/xy that are not under it.
    mounts = (f"/mnt/x={node.url}", f"/q/y={node.url}")
    script = "\n".join([
        "cat /mnt/x/f", "cat /q/y/f", f"cat {node.remote}/f", "cat /mnt/x/./d/../f",
        "cat f",  # relative to the real cwd (a local dir): the local file
        "cat //mnt/x/f 2>/dev/null || echo no-double-slash",  # not the prefix, as before
        "cat /mnt/xy/f 2>/dev/null || echo no-mnt-xy",
        "cat /q/yy 2>/dev/null || echo no-q-yy",
        "cat /REMOTE 2>/dev/null || echo no-remote-word",
        "cd /mnt/x/d && cat g && cat ../f",  # relative to a ferry cwd
        f"cd {local} && cat f",
    ])
    p = ferry_run(["sh", "-c", script], mode=mode, mounts=mounts, cwd=local)
    assert p.stdout.split("\n") == ["node", "node", "node", "node", "local", "no-double-slash", "no-mnt-xy",
                                    "no-q-yy", "no-remote-word", "node-g", "node", "local", ""]
