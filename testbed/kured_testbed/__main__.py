"""`python -m kured_testbed` is `kured-sandbox` (the supervisor is started this way)."""

from kured_testbed.cli import main

main()
