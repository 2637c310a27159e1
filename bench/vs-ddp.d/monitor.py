"""Runs a command and watches its process tree (for bench/vs-ddp). Writes a JSON file with
  - the peak resident memory (VmHWM, /proc/PID/status) of the processes named --peak-name, if any
    (for `anyk local`: its child `anyk-server`), and the largest VmHWM of any process in the tree;
  - the TCP bytes sent and received by the sockets of the watched processes (those named
    --socket-name, or every process of the tree when it is not given), from `ss -ti` (the
    kernel's per-connection bytes_sent / bytes_received), sampled every --interval seconds and
    kept per connection at its largest value; traffic of a connection's last interval before it
    closes can be missed, so the figures are a slight undercount.
Exits with the command's status.
Usage: monitor.py --out FILE [--peak-name NAME] [--socket-name NAME] -- CMD ARGS...
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

SOCK = re.compile(r"^\S+\s+\d+\s+\d+\s+(\S+)\s+(\S+)")
USERS = re.compile(r"pid=(\d+)")


def tree(root):
    """PIDs of root and its descendants, with their names."""
    children, names = {}, {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                s = f.read()
        except OSError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        ppid = int(s[s.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(d))
        names[int(d)] = name
    out, todo = {}, [root]
    while todo:
        p = todo.pop()
        if p in names:
            out[p] = names[p]
        todo.extend(children.get(p, []))
    return out


def hwm_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def sockets(with_pids):
    """{(local, peer): (bytes_sent, bytes_received, pids)} of established TCP sockets."""
    args = ["ss", "-tinH"] + (["-p"] if with_pids else [])
    try:
        text = subprocess.run(args, capture_output=True, text=True).stdout
    except FileNotFoundError:
        # No iproute2 (a bare machine): step times and memory are still measured, bytes are not.
        return {}
    out, key, pids = {}, None, ()
    for line in text.splitlines():
        if not line[:1].isspace():
            m = SOCK.match(line)
            key = (m.group(1), m.group(2)) if m else None
            pids = tuple(int(p) for p in USERS.findall(line))
        elif key:
            sent = re.search(r"bytes_sent:(\d+)", line)
            recv = re.search(r"bytes_received:(\d+)", line)
            out[key] = (int(sent.group(1)) if sent else 0, int(recv.group(1)) if recv else 0, pids)
            key = None
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--peak-name")
    p.add_argument("--socket-name")
    p.add_argument("--interval", type=float, default=0.25)
    p.add_argument("cmd", nargs=argparse.REMAINDER)
    a = p.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd
    child = subprocess.Popen(cmd)
    peak = {}  # pid -> (name, VmHWM kB)
    owned, foreign = set(), set()  # connection keys of watched / other processes
    best = {}  # key -> [sent, received]
    last_pid_scan = 0.0
    while True:
        done = child.poll() is not None
        procs = tree(child.pid)
        for pid, name in procs.items():
            h = hwm_kb(pid)
            if h:
                peak[pid] = (name, max(h, peak.get(pid, (name, 0))[1]))
        watched = {pid for pid, n in procs.items() if a.socket_name in (None, n)}
        socks = sockets(False)
        unknown = [k for k in socks if k not in owned and k not in foreign]
        if unknown and time.monotonic() - last_pid_scan > 1.0 and watched:
            last_pid_scan = time.monotonic()
            for k, (_, _, pids) in sockets(True).items():
                if k in owned or k in foreign:
                    continue
                if set(pids) & watched:
                    owned.add(k)
                elif pids:
                    foreign.add(k)
        for k in owned & socks.keys():
            s, r, _ = socks[k]
            b = best.setdefault(k, [0, 0])
            b[0], b[1] = max(b[0], s), max(b[1], r)
        if done:
            break
        time.sleep(a.interval)
    named = [h for n, h in peak.values() if n == a.peak_name]
    with open(a.out, "w") as f:
        json.dump(
            {
                "peak_name": a.peak_name,
                "peak_rss_kb": max(named) if named else None,
                "largest_process_rss_kb": max((h for _, h in peak.values()), default=0),
                "largest_process": max(peak.values(), key=lambda v: v[1], default=("", 0))[0],
                "connections": len(best),
                "bytes_sent": sum(b[0] for b in best.values()),
                "bytes_received": sum(b[1] for b in best.values()),
            },
            f,
        )
    sys.exit(child.returncode)


if __name__ == "__main__":
    main()
