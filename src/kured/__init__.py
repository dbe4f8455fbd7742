"""kured: the Kubernetes Reboot Daemon, reimplemented in Python.

One daemon per node notices that its host needs a reboot, waits for a
maintenance window and for nothing to block it, takes a cluster-wide lock so
only N nodes reboot at once, drains the node through the Eviction API,
reboots, and after the reboot uncordons the node and passes the lock on.
"""

__version__ = "0.1.0"
