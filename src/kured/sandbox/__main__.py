"""`python -m kured.sandbox` is `kured-sandbox` (the supervisor is started this way)."""

from kured.sandbox.cli import main

main()
