#!/usr/bin/env python3
"""The host state that hack/real-cluster changes, so that down can undo it and check-clean prove it.

  host.py snapshot STATE_DIR            the state now, as JSON on stdout
  host.py diff SNAPSHOT STATE_DIR       what differs from SNAPSHOT now; exits 1 when anything does
  host.py restore-sysctls SNAPSHOT      writes back the recorded sysctls that differ
  host.py remove-new-paths SNAPSHOT     removes the default host paths (below) that SNAPSHOT lacks
  host.py remove-new-cgroups SNAPSHOT   removes the kubepods and libpod_parent cgroups (podman's, made
                                        by hack/images) that SNAPSHOT lacks, where they are empty
  host.py clean-iptables                removes the KUBE-* and CNI-* chains (and every rule that
                                        jumps to one) from every table of iptables and ip6tables

The state: processes of the node's binaries, mounts under STATE_DIR and /run/netns, network links,
iptables/ip6tables chains (every table), the cgroups kubelet and podman create, the sysctls kubelet
and the CNI bridge plugin set, and the host paths a kubelet or containerd would create by default.
"""
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys

PROCESSES = ("containerd", "kubelet", "kube-proxy", "coredns")
SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward")
CGROUP_NAMES = ("kubepods", "libpod_parent")
# Where a component left on its defaults would write. Some are hard-coded, whatever the
# configuration: the kubelet's device plugin socket (/var/lib/kubelet/device-plugins), the shims'
# socket directory (/run/containerd/s), the CNI result cache of containerd's CNI library
# (/var/lib/cni/results); down removes those that were not there before up.
HOST_PATHS = ("/run/netns", "/var/run/netns", "/run/containerd", "/var/lib/containerd", "/var/lib/kubelet",
              "/var/log/pods", "/var/lib/cni", "/etc/cni/net.d", "/run/nri")
CHAIN_PREFIXES = ("KUBE-", "CNI-")


def run(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout


def node_processes():
    """(pid, name, command line) of every process running one of the node's binaries, whoever
    started it."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            comm = open(f"/proc/{pid}/comm").read().strip()
            cmdline = open(f"/proc/{pid}/cmdline").read().replace("\0", " ")
        except OSError:
            continue
        if comm in PROCESSES or comm.startswith("containerd-shim"):
            found.append((pid, comm, cmdline))
    return found


def processes(state_dir):
    """Ours: the node's binaries started for STATE_DIR (each names a file under it on its command
    line; other containerds on this machine are not ours), and whatever runs in a kubepods cgroup."""
    dirs = {state_dir, os.path.realpath(state_dir)}
    found = [f"{comm} (pid {pid})" for pid, comm, cmdline in node_processes() if any(d + "/" in cmdline for d in dirs)]
    for pid in os.listdir("/proc"):
        try:
            if pid.isdigit() and "/kubepods" in open(f"/proc/{pid}/cgroup").read():
                found.append(f"{open(f'/proc/{pid}/comm').read().strip()} (pid {pid}, in kubepods)")
        except OSError:
            pass
    return sorted(found)


def mounts(state_dir):
    found = []
    for line in open("/proc/self/mountinfo"):
        point = line.split()[4].replace("\\040", " ")
        if point == state_dir or point.startswith(state_dir + "/") or point.startswith("/run/netns"):
            found.append(point)
    return sorted(found)


def chains():
    found = []
    for tool in ("iptables-save", "ip6tables-save"):
        table = None
        for line in run(tool).splitlines():
            if line.startswith("*"):
                table = line[1:]
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                if ours(chain):
                    found.append(f"{tool[:-5]} -t {table} {chain}")
    return sorted(found)


def cgroups():
    found = []
    for name in CGROUP_NAMES:
        found += glob.glob(f"/sys/fs/cgroup/*/{name}") + glob.glob(f"/sys/fs/cgroup/{name}")
    return sorted(found)


def sysctls():
    values = {}
    for key in SYSCTLS:
        try:
            values[key] = open(f"/proc/sys/{key}").read().strip()
        except OSError:
            pass
    return values


def snapshot(state_dir):
    return {
        "processes": processes(state_dir),
        "mounts": mounts(os.path.realpath(state_dir)),
        "links": sorted(line.split(":")[1].strip().split("@")[0] for line in run("ip", "-o", "link").splitlines()),
        "chains": chains(),
        "cgroups": cgroups(),
        "paths": sorted(p for p in HOST_PATHS if os.path.lexists(p)),
        "sysctls": sysctls(),
    }


def diff(before, now):
    problems = []
    for key in ("processes", "mounts", "links", "chains", "cgroups", "paths"):
        if key == "processes":
            # Compare by name: pids of processes that were there before may not be the same ones.
            strip = lambda items: sorted(i.split(" (")[0] for i in items)
            extra = strip(now[key])
            for name in strip(before[key]):
                if name in extra:
                    extra.remove(name)
            extra = [i for i in now[key] if i.split(" (")[0] in extra]
        else:
            extra = sorted(set(now[key]) - set(before[key]))
        problems += [f"left over {key[:-1] if key != 'processes' else 'process'}: {i}" for i in extra]
    for key, value in before["sysctls"].items():
        if now["sysctls"].get(key) != value:
            problems.append(f"sysctl {key.replace('/', '.')} is {now['sysctls'].get(key)}, was {value}")
    return problems


def restore_sysctls(before):
    for key, value in before["sysctls"].items():
        path = f"/proc/sys/{key}"
        if open(path).read().strip() != value:
            with open(path, "w") as f:
                f.write(value)
            print(f"restored {key.replace('/', '.')} = {value}", file=sys.stderr)


def remove_new_paths(before):
    """Kept while any containerd or kubelet runs (another one on this machine may use them)."""
    running = node_processes()
    if running:
        names = ", ".join(f"{comm} (pid {pid})" for pid, comm, _ in running)
        print(f"kept {', '.join(p for p in HOST_PATHS if p not in before['paths'] and os.path.lexists(p))}"
              f" (maybe someone else's: {names} running)", file=sys.stderr)
        return
    for path in HOST_PATHS:
        if path not in before["paths"] and os.path.lexists(path):
            shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
            print(f"removed {path}", file=sys.stderr)


def remove_new_cgroups(before):
    """rmdir, deepest first: a cgroup that still has processes (someone else's podman container)
    stays, and check-clean names it."""
    for top in cgroups():
        if top in before["cgroups"]:
            continue
        for root, dirs, _ in os.walk(top, topdown=False):
            try:
                os.rmdir(root)
            except OSError:
                pass


def ours(name):
    return name.startswith(CHAIN_PREFIXES)


def clean_iptables():
    """Deletes the rules that jump to one of our chains, then flushes and deletes our chains.
    Rules are deleted one by one ("-D" with the rule's own words) so that other rules in the
    same built-in chains (podman's, the host's) stay untouched."""
    for tool in ("iptables", "ip6tables"):
        tables = [line[1:] for line in run(f"{tool}-save").splitlines() if line.startswith("*")]
        for table in tables:
            rules = run(tool, "-w", "-t", table, "-S").splitlines()
            for rule in rules:
                words = shlex.split(rule)
                if words[0] != "-A" or ours(words[1]):
                    continue
                if "-j" in words and ours(words[words.index("-j") + 1]) or "-g" in words and ours(words[words.index("-g") + 1]):
                    subprocess.run([tool, "-w", "-t", table, "-D"] + words[1:], check=False)
            mine = [shlex.split(r)[1] for r in rules if r.startswith("-N ") and ours(shlex.split(r)[1])]
            for chain in mine:
                subprocess.run([tool, "-w", "-t", table, "-F", chain], check=False)
            for chain in mine:
                subprocess.run([tool, "-w", "-t", table, "-X", chain], check=False)


def main():
    command = sys.argv[1]
    if command == "snapshot":
        json.dump(snapshot(sys.argv[2]), sys.stdout, indent=1)
    elif command == "diff":
        problems = diff(json.load(open(sys.argv[2])), snapshot(sys.argv[3]))
        for p in problems:
            print(p)
        sys.exit(1 if problems else 0)
    elif command == "restore-sysctls":
        restore_sysctls(json.load(open(sys.argv[2])))
    elif command == "remove-new-paths":
        remove_new_paths(json.load(open(sys.argv[2])))
    elif command == "remove-new-cgroups":
        remove_new_cgroups(json.load(open(sys.argv[2])))
    elif command == "clean-iptables":
        clean_iptables()
    else:
        sys.exit(f"usage: {sys.argv[0]} snapshot|diff|restore-sysctls|clean-iptables")


if __name__ == "__main__":
    main()
