"""The local lab: throwaway Debian bookworm hosts with systemd and sshd on this one machine.

Each host is a root file system unpacked from a cached image onto a tmpfs, booted with
systemd as PID 1 inside its own network, mount, PID, UTS, IPC and cgroup namespaces, and
reached over SSH through a private bridge, exactly as pyinfra reaches a real server.
`lab.control` is the entry point (`up`, `status`, `down`); the other modules are its steps.
"""
