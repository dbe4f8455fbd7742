"""The real-node lab: QEMU guests running kured as users deploy it (issue 14)."""
