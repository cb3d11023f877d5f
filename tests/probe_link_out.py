"""Run under ferry: every kind of call through BASE/o, a link to a local dir (see
tests/test_symlinks_out.py), prints "NAME ok RESULT" or "NAME ERR ERRNO MESSAGE"."""
import os, sys, tempfile, subprocess, shutil
b = sys.argv[1] + "/o"
tests = {
 "open": lambda: open(b + "/file.txt").read(),
 "create": lambda: open(b + "/new1", "w").write("x"),
 "stat": lambda: os.stat(b + "/file.txt").st_size,
 "lstat": lambda: os.lstat(b + "/file.txt").st_size,
 "listdir": lambda: sorted(os.listdir(b + "/sub")),
 "mkstemp": lambda: os.close(tempfile.mkstemp(dir=b)[0]),
 "mkdtemp": lambda: tempfile.mkdtemp(dir=b) and 0,
 "walk": lambda: len(list(os.walk(b))),
 "exec": lambda: subprocess.run([b + "/tool.sh"], capture_output=True).stdout,
 "chmod": lambda: os.chmod(b + "/file.txt", 0o644),
 "utime": lambda: os.utime(b + "/file.txt"),
 "truncate": lambda: os.truncate(b + "/new1", 0),
 "mkdir": lambda: os.mkdir(b + "/d2"),
 "rmdir": lambda: os.rmdir(b + "/d2"),
 "symlink": lambda: os.symlink("x", b + "/sl"),
 "readlink": lambda: os.readlink(b + "/sl"),
 "unlink": lambda: os.unlink(b + "/sl"),
 "access": lambda: os.access(b + "/file.txt", os.R_OK),
 "statvfs": lambda: os.statvfs(b + "/file.txt").f_bsize > 0,
 "getxattr": lambda: os.listxattr(b + "/file.txt"),
 "chdir": lambda: os.chdir(b + "/sub") or os.getcwd(),
 "realpath": lambda: os.path.realpath(b + "/file.txt"),
 "mkfifo": lambda: os.mkfifo(b + "/fifo"),
 "rename-in": lambda: os.rename(b + "/new1", b + "/new2"),
 "link-in": lambda: os.link(b + "/new2", b + "/new3"),
 "copyfile": lambda: shutil.copyfile(b + "/file.txt", b + "/copy"),
}
for k, f in tests.items():
    try:
        r = f()
        print(k, "ok", repr(r))
    except OSError as e:
        print(k, "ERR", e.errno, e)
