"""Makes a pid change hands between the supervisor's check and its act, and reports what
became of the process that got it. Run as root, as pid 1 of a pid namespace of its own
(`unshare --pid --fork --mount-proc`), by tests/privilege.rs:

    pid-reuse.py SUPERVISOR DIR UID GID VICTIM_UID VICTIM_GID renice|throttle

In DIR, `qemu-system-x86_64` is a stand-in QEMU (a copy of sleep). A "daemon" of UID starts
it as its child and asks the supervisor (started with --delay-before-acting-ms) about it;
while the supervisor waits, the stand-in is killed and reaped, ns_last_pid is set so that
the next process gets its pid, and a process of VICTIM_UID is started. One JSON line out.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

sup_bin, d, uid, gid, vuid, vgid, what = sys.argv[1:8]
uid, gid, vuid, vgid = int(uid), int(gid), int(vuid), int(vgid)
sock = os.path.join(d, "reuse.sock")
sup = subprocess.Popen(
    [sup_bin, "--daemon-uid", str(uid), "--socket", sock, "--delay-before-acting-ms", "1500"],
    stderr=subprocess.PIPE, text=True)
end = time.monotonic() + 10
while not os.path.exists(sock):
    assert time.monotonic() < end, "the supervisor did not listen"
    time.sleep(0.01)
for line in sup.stderr:
    if line.startswith("serving uid"):
        break

qemu_pid_r, qemu_pid_w = os.pipe()
reply_r, reply_w = os.pipe()
daemon = os.fork()
if daemon == 0:
    os.close(qemu_pid_r)
    os.close(reply_r)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    qemu = subprocess.Popen([os.path.join(d, "qemu-system-x86_64"), "1000"])
    os.write(qemu_pid_w, f"{qemu.pid}\n".encode())
    pidfd = os.pidfd_open(qemu.pid)
    args = {"renice": {"pid": qemu.pid, "nice": -7},
            "throttle": {"pid": qemu.pid, "percent": 5}}[what]
    line = json.dumps({"version": 2, "request": {what: args}}).encode() + b"\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sock)
    socket.send_fds(s, [line], [pidfd])
    # Reaped as soon as it is killed, which frees its pid.
    qemu.wait()
    os.write(reply_w, s.makefile("rb").readline())
    os._exit(0)
os.close(qemu_pid_w)
os.close(reply_w)
qemu = int(os.read(qemu_pid_r, 64))

for line in sup.stderr:
    if line.startswith(f"process {qemu}: checked"):
        break
os.kill(qemu, signal.SIGKILL)
while os.path.exists(f"/proc/{qemu}"):
    time.sleep(0.001)
with open("/proc/sys/kernel/ns_last_pid", "w") as f:
    f.write(str(qemu - 1))
victim = subprocess.Popen(["sleep", "1000"], user=vuid, group=vgid, extra_groups=[])

reply = b""
while not reply.endswith(b"\n"):
    chunk = os.read(reply_r, 4096)
    if not chunk:
        break
    reply += chunk
os.waitpid(daemon, 0)
with open(f"/proc/{victim.pid}/stat") as f:
    stat = f.read().rsplit(")", 1)[1].split()
with open(f"/proc/{victim.pid}/cgroup") as f:
    cgroups = f.read()
print(json.dumps({
    "qemu": qemu,
    "victim": victim.pid,
    "victim_nice": int(stat[16]),
    "victim_state": stat[0],
    "victim_in_gns3_cgroup": "gns3-qemud" in cgroups,
    "reply": json.loads(reply) if reply else None,
}))
victim.kill()
sup.kill()
