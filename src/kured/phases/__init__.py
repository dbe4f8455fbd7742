"""The agent's phases (wait, lock, drain, reboot, resume) and what wakes it, one module
each; :class:`kured.agent.Agent` puts them together."""
