"""kured-sandbox: a real local control plane with simulated nodes (see docs/architecture.md)."""
